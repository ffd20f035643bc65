import { Readable } from "node:stream";
import { describe, expect, it, vi } from "vitest";
import { collect } from "./tar-helpers.js";

// Counts the gzip jobs running at once: parallelGzip promisifies zlib's gzip at import.
const jobs = vi.hoisted(() => ({ running: 0, peak: 0, total: 0 }));
vi.mock("node:zlib", async (importOriginal) => {
  const zlib = await importOriginal<typeof import("node:zlib")>();
  const gzip = (input: Buffer, options: object, callback: (error: Error | null, result: Buffer) => void) => {
    jobs.running++;
    jobs.total++;
    jobs.peak = Math.max(jobs.peak, jobs.running);
    // Slow workers, so a queue that does not wait for them would show.
    setTimeout(() => {
      zlib.gzip(input, options, (error, result) => {
        jobs.running--;
        callback(error, result);
      });
    }, 5);
  };
  return { ...zlib, gzip, default: { ...zlib, gzip } };
});

const { parallelGzip } = await import("../../src/transfer/parallel-gzip.js");
const { gunzipSync } = await import("node:zlib");

const CHUNK = 32 * 1024;

describe("ParallelGzip workers", () => {
  it.each([1, 2, 4])("never has more than %d chunks compressing, with small writes", async (workers) => {
    Object.assign(jobs, { running: 0, peak: 0, total: 0 });
    const data = Buffer.alloc(20 * CHUNK, "abc");
    const pieces = Array.from({ length: 80 }, (_, i) => data.subarray(i * (CHUNK / 4), (i + 1) * (CHUNK / 4)));
    const gz = await collect(Readable.from(pieces).pipe(parallelGzip({ level: 1, chunkSize: CHUNK, workers })));
    expect(gunzipSync(gz).equals(data)).toBe(true);
    expect(jobs.total).toBe(20);
    expect(jobs.peak).toBeLessThanOrEqual(workers);
    if (workers > 1) expect(jobs.peak).toBeGreaterThan(1); // and it does run them in parallel
  });

  it("never has more than `workers` chunks compressing when one write holds many chunks", async () => {
    Object.assign(jobs, { running: 0, peak: 0, total: 0 });
    const data = Buffer.alloc(12 * CHUNK, "xyz");
    const gz = await collect(Readable.from([data]).pipe(parallelGzip({ level: 1, chunkSize: CHUNK, workers: 2 })));
    expect(gunzipSync(gz).equals(data)).toBe(true);
    expect(jobs.total).toBe(12);
    expect(jobs.peak).toBeLessThanOrEqual(2);
  });
});
