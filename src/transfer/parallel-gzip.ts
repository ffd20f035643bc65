/**
 * Gzip on every core: the input is cut into fixed-size chunks, each compressed on the libuv thread
 * pool into its own gzip member, and the members are emitted in input order. Members back to back
 * are one valid .tar.gz for GNU gunzip, zlib and Go's reader alike. At most `workers` chunks are in
 * flight, so memory is about chunkSize × workers × 2 whatever the input size.
 */
import { Transform, type TransformCallback } from "node:stream";
import { promisify } from "node:util";
import { deflateRaw, gzip } from "node:zlib";

const gzipAsync = promisify(gzip);
const deflateRawAsync = promisify(deflateRaw);

const PROBE_BYTES = 64 * 1024;
const ZLIB_STEP_BYTES = 1024 * 1024;
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
  // main thread; the 16 KiB default makes hundreds per chunk, and the hops, not deflate, set the pace.
  return gzipAsync(chunk, { level: effectiveLevel, chunkSize: ZLIB_STEP_BYTES });
}

export class ParallelGzip extends Transform {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private submitted = 0;
  private readonly inFlight: Promise<Buffer>[] = [];

  constructor(private readonly options: ParallelGzipOptions) {
    super();
  }

  private submit(chunk: Buffer): void {
    const job = compressChunk(chunk, this.options.level);
    job.catch(() => undefined); // observed when it reaches the head of the queue
    this.inFlight.push(job);
    this.submitted++;
  }

  /** Cuts whole chunks (and with `final` the rest), one at a time, so one large write never puts more than `workers` chunks in flight. */
  private async cutChunks(final: boolean): Promise<void> {
    const { chunkSize, workers } = this.options;
    while (this.pendingBytes >= chunkSize || (final && this.pendingBytes > 0)) {
      const joined = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
      const size = Math.min(chunkSize, joined.length);
      this.submit(joined.subarray(0, size));
      const rest = joined.subarray(size);
      this.pending = rest.length > 0 ? [rest] : [];
      this.pendingBytes = rest.length;
      await this.drain(workers - 1);
    }
  }

  private async drain(limit: number): Promise<void> {
    while (this.inFlight.length > limit) this.push(await this.inFlight.shift()!);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (this.pendingBytes < this.options.chunkSize) return callback();
    this.cutChunks(false).then(() => callback(), callback);
  }

  override _flush(callback: TransformCallback): void {
    this.cutChunks(true)
      .then(() => {
        // An empty input still yields one (empty) member, so the object is a valid gzip file.
        if (this.submitted === 0) this.submit(Buffer.alloc(0));
        return this.drain(0);
      })
      .then(() => callback(), callback);
  }
}
