/**
 * Gzip on every core: the input is cut into fixed-size chunks, each compressed on the libuv thread
 * pool into its own gzip member, and the members are emitted in input order. Members back to back
 * are one valid .tar.gz for GNU gunzip, zlib and Go's reader alike. At most `workers` chunks are in
 * flight, read into `workers + 1` reused buffers, so memory is about chunkSize × workers × 2
 * whatever the input size.
 */
import { Duplex } from "node:stream";
import { promisify } from "node:util";
import { deflateRaw, gzip } from "node:zlib";
import { BufferPool, pooledChunks } from "./buffer-pool.js";

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

/**
 * The compressing stage of a pipeline. The input is copied into `workers + 1` reused buffers (one
 * filling, the others compressing); waiting for a free one is the backpressure on the input.
 */
export function parallelGzip(options: ParallelGzipOptions): Duplex {
  return Duplex.from(async function* (source: AsyncIterable<Buffer>) {
    const inFlight: Promise<Buffer>[] = [];
    // An empty input still yields one (empty) chunk, hence one member: a valid gzip file.
    for await (const chunk of pooledChunks(source, new BufferPool(options.chunkSize, options.workers + 1))) {
      const job = compressChunk(chunk.data, options.level).finally(chunk.release);
      job.catch(() => undefined); // observed when it reaches the head of the queue
      inFlight.push(job);
      while (inFlight.length >= options.workers) yield await inFlight.shift()!;
    }
    while (inFlight.length > 0) yield await inFlight.shift()!;
  });
}
