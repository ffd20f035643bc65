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

  constructor(
    readonly bufferSize: number,
    readonly capacity: number,
  ) {}

  async take(): Promise<Buffer> {
    const buffer = this.free.pop();
    if (buffer) return buffer;
    if (this.allocated < this.capacity) {
      this.allocated++;
      return Buffer.allocUnsafeSlow(this.bufferSize);
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** Only once whoever read the buffer is done with it: the next taker overwrites it. */
  give(buffer: Buffer): void {
    const next = this.waiting.shift();
    if (next) next(buffer);
    else this.free.push(buffer);
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
 * ends; an empty stream yields one empty chunk). Reading stops while every buffer is out.
 */
export async function* pooledChunks(source: AsyncIterable<Buffer>, pool: BufferPool): AsyncGenerator<PooledChunk> {
  let current = await pool.take();
  let filled = 0;
  const emit = (): PooledChunk => {
    const buffer = current;
    let released = false;
    return {
      data: buffer.subarray(0, filled),
      release: () => {
        if (released) return;
        released = true;
        pool.give(buffer);
      },
    };
  };
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
  }
  if (filled > 0 || !emitted) yield emit();
  else pool.give(current);
}
