/**
 * Gzip on every core: the input is cut into fixed-size chunks, each compressed on the libuv thread
 * pool into its own gzip member, and the members are emitted in input order. Members back to back
 * are one valid .tar.gz for GNU gunzip, zlib and Go's reader alike. At most `workers` chunks are in
 * flight, read into `workers + 1` reused buffers, so memory is about chunkSize × workers × 2
 * whatever the input size.
 */
import { Transform, type TransformCallback } from "node:stream";
import { promisify } from "node:util";
import { deflateRaw, gzip } from "node:zlib";
import { BufferPool } from "./buffer-pool.js";

const gzipAsync = promisify(gzip);
const deflateRawAsync = promisify(deflateRaw);

const PROBE_BYTES = 64 * 1024;
/** A probe that saves less than this share of its bytes marks the chunk as not worth compressing. */
const MIN_PROBE_SAVING = 0.03;

export interface ParallelGzipOptions {
  readonly level: number;
  readonly chunkSize: number;
  readonly workers: number;
}

/** Compresses one chunk; chunks whose sample does not shrink go out as a stored (level 0) member. */
export async function compressChunk(chunk: Buffer, level: number): Promise<Buffer> {
  let effectiveLevel = level;
  if (level > 0 && chunk.length > PROBE_BYTES) {
    const probe = await deflateRawAsync(chunk.subarray(0, PROBE_BYTES), { level: 1 });
    if (probe.length > PROBE_BYTES * (1 - MIN_PROBE_SAVING)) effectiveLevel = 0;
  }
  // zlib works through its input in `chunkSize` steps, each a hop between the thread pool and the
  // main thread and a buffer of its own. An output step larger than deflate's worst case (stored
  // blocks add 5 bytes per 64 KiB) makes it one step and one buffer per member.
  return gzipAsync(chunk, { level: effectiveLevel, chunkSize: chunk.length + (chunk.length >> 10) + 1024 });
}

export class ParallelGzip extends Transform {
  /** Input chunks are copied into pooled buffers: one per worker, and one filling. */
  private readonly pool: BufferPool;
  private current: Buffer | undefined;
  private filled = 0;
  private submitted = 0;
  private readonly inFlight: Promise<Buffer>[] = [];

  constructor(private readonly options: ParallelGzipOptions) {
    super();
    this.pool = new BufferPool(options.chunkSize, options.workers + 1);
  }

  /** Submits the filled buffer, then waits until fewer than `workers` chunks are in flight. */
  private async submitCurrent(): Promise<void> {
    const pooled = this.current;
    const job = compressChunk(pooled?.subarray(0, this.filled) ?? Buffer.alloc(0), this.options.level).finally(() => {
      if (pooled) this.pool.give(pooled);
    });
    this.current = undefined;
    this.filled = 0;
    job.catch(() => undefined); // observed when it reaches the head of the queue
    this.inFlight.push(job);
    this.submitted++;
    await this.drain(this.options.workers - 1);
  }

  private async absorb(chunk: Buffer): Promise<void> {
    let offset = 0;
    while (offset < chunk.length) {
      this.current ??= await this.pool.take();
      const copied = chunk.copy(this.current, this.filled, offset);
      offset += copied;
      this.filled += copied;
      if (this.filled === this.current.length) await this.submitCurrent();
    }
  }

  private async drain(limit: number): Promise<void> {
    while (this.inFlight.length > limit) this.push(await this.inFlight.shift()!);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.absorb(chunk).then(() => callback(), callback);
  }

  override _flush(callback: TransformCallback): void {
    // An empty input still yields one (empty) member, so the object is a valid gzip file.
    const last = this.filled > 0 || this.submitted === 0 ? this.submitCurrent() : Promise.resolve();
    last
      .then(() => this.drain(0))
      .then(() => callback(), callback);
  }
}
