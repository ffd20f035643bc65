import type { Writable } from "node:stream";
import { finished } from "node:stream/promises";

/**
 * A fixed number of equal buffers handed out and given back. Streaming a gigabyte through fresh
 * buffers leaves V8 to collect gigabytes of garbage, with a full GC every few tens of MiB; reusing
 * a few buffers keeps memory flat and the collector idle. Waiting for a free buffer is the
 * backpressure: whoever fills them stops reading until one comes back.
 */
export class BufferPool {
  private readonly free: Buffer[] = [];
  private readonly waiting: ((buffer: Buffer) => void)[] = [];
  private allocated = 0;

  /** With `shared`, the buffers are SharedArrayBuffer memory, which a worker thread can read in place. */
  constructor(
    readonly bufferSize: number,
    readonly capacity: number,
    private readonly options: { readonly shared?: boolean } = {},
  ) {}

  async take(): Promise<Buffer> {
    const buffer = this.free.pop();
    if (buffer) return buffer;
    if (this.allocated < this.capacity) {
      this.allocated++;
      return this.options.shared ? Buffer.from(new SharedArrayBuffer(this.bufferSize)) : Buffer.allocUnsafeSlow(this.bufferSize);
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** Only once whoever read the buffer is done with it: the next taker overwrites it. */
  give(buffer: Buffer): void {
    const next = this.waiting.shift();
    if (next) next(buffer);
    else this.free.push(buffer);
  }

  /** `data` (the filled part of `buffer`, taken from this pool) with a release that gives `buffer` back once. */
  chunk(buffer: Buffer, data: Buffer): PooledChunk {
    let released = false;
    return {
      data,
      release: () => {
        if (released) return;
        released = true;
        this.give(buffer);
      },
    };
  }
}

export interface PooledChunk {
  /** The filled part of a pooled buffer. */
  readonly data: Buffer;
  /** Gives the buffer back; call once, after the last use of `data`. */
  release(): void;
}

/**
 * Copies a byte stream into pooled buffers and yields each when full (the last one when the stream
 * ends; an empty stream yields one empty chunk). Reading stops while every buffer is out. With
 * `chunksHandedOver`, each chunk's memory is its own and nobody else's (gzip members made for one
 * upload, or a stream's joined copy of them): it is freed once copied.
 */
export async function* pooledChunks(source: AsyncIterable<Buffer>, pool: BufferPool, options: { chunksHandedOver?: boolean } = {}): AsyncGenerator<PooledChunk> {
  let current = await pool.take();
  let filled = 0;
  const emit = (): PooledChunk => pool.chunk(current, current.subarray(0, filled));
  let emitted = false;
  for await (const chunk of source) {
    let offset = 0;
    while (offset < chunk.length) {
      const copied = chunk.copy(current, filled, offset);
      filled += copied;
      offset += copied;
      if (filled === current.length) {
        yield emit();
        emitted = true;
        current = await pool.take();
        filled = 0;
      }
    }
    if (options.chunksHandedOver) discard(chunk);
  }
  if (filled > 0 || !emitted) yield emit();
  else pool.give(current);
}

/**
 * Yields a source's chunks and frees the memory under a buffer once the consumer is done with the
 * chunk that reaches the buffer's end, and the last buffer at the end. For sources that fill each
 * buffer in order, give the chunks away and never look at them again: an HTTP body's reads (a
 * buffer each), zlib's output (slices of one buffer until zlib has filled it and taken a new one).
 * A chunk that stops short of its buffer's end is left to the collector: the source may still be
 * writing after it (and a stream's read() can hand out a joined copy instead of the slices, so a
 * chunk from another buffer says nothing). The consumer is done with a chunk when it asks for the
 * next.
 */
export async function* handedOver(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  let last: Buffer | undefined;
  for await (const chunk of source) {
    yield chunk;
    if (chunk.byteOffset + chunk.length === chunk.buffer.byteLength) discard(chunk);
    last = chunk;
  }
  if (last) discard(last);
}

/**
 * Frees a buffer's memory now instead of at V8's next full collection, which for memory outside the
 * heap comes only after tens of MiB of such garbage have piled up. Only for a buffer whose every
 * view belongs to the caller: they all become empty. Left to the collector: Node's shared slab for
 * small buffers (Buffer.poolSize bytes, which no buffer from it covers whole), memory Node has
 * marked untransferable, and everything on a runtime without ArrayBuffer.prototype.transfer.
 */
export function discard(buffer: Buffer): void {
  const memory = buffer.buffer as ArrayBuffer & { transfer?: (length: number) => ArrayBuffer };
  const whole = buffer.byteOffset === 0 && buffer.length === memory.byteLength;
  if (memory.byteLength === 0 || !(whole || memory.byteLength > Buffer.poolSize)) return;
  try {
    memory.transfer?.(0);
  } catch {
    // untransferable: the collector frees it
  }
}

/**
 * Writes pooled chunks to `sink` (in slices of at most `sliceSize`, if given) and gives each chunk's
 * buffer back once the sink has consumed its last slice (its write callback) and what `onChunk`
 * returned has settled, so a stage that still reads its input asynchronously, like zlib, a socket or
 * a hashing thread, never sees a buffer overwritten. Up to `queued` chunks (default 1) wait with the
 * sink at once: with two, the sink starts on the next the moment it is done with one instead of
 * waiting for this loop to come round, and the pool the chunks come from still bounds the memory.
 * Ends the sink after the last chunk; destroys it if the chunks fail, and fails if the sink does.
 */
export async function writeChunks(
  chunks: AsyncIterable<PooledChunk>,
  sink: Writable,
  options: { sliceSize?: number; queued?: number; onChunk?: (data: Buffer) => Promise<void> | void } = {},
): Promise<void> {
  const queued = options.queued ?? 1;
  if (!(queued >= 1)) throw new RangeError(`writeChunks needs at least one chunk queued, not ${queued}`);
  const sinkFailed = finished(sink, { readable: false });
  sinkFailed.catch(() => undefined); // raced below; once the sink has ended it is no longer needed
  const written = (slice: Buffer) => new Promise<void>((resolve, reject) => sink.write(slice, (error) => (error ? reject(error) : resolve())));
  const withSink = new Map<PooledChunk, Promise<void>>();
  const giveBack = (chunk: PooledChunk) => {
    if (withSink.delete(chunk)) chunk.release();
  };
  try {
    for await (const chunk of chunks) {
      withSink.set(chunk, Promise.resolve()); // held from here, so an onChunk that throws still gives it back below
      const uses = [options.onChunk?.(chunk.data)];
      const sliceSize = options.sliceSize ?? chunk.data.length;
      for (let offset = 0; offset < chunk.data.length; offset += sliceSize) uses.push(written(chunk.data.subarray(offset, offset + sliceSize)));
      const done = Promise.all(uses).then(() => giveBack(chunk));
      done.catch(() => undefined); // raced below, and the first failure destroys the sink anyway
      withSink.set(chunk, done);
      while (withSink.size >= queued) await Promise.race([...withSink.values(), sinkFailed]);
    }
    await Promise.race([Promise.all(withSink.values()), sinkFailed]);
  } catch (error) {
    sink.destroy(error as Error);
    throw error;
  } finally {
    // After a failure a stage may still be reading a chunk given back here (zlib finishing its current
    // write, a hashing thread), but nothing refills it: `for await` has already closed the chunks' source.
    for (const chunk of [...withSink.keys()]) giveBack(chunk);
  }
  sink.end();
}
