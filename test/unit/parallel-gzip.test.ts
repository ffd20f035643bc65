import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { gunzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { compressChunk, parallelGzip } from "../../src/transfer/parallel-gzip.js";
import { collect } from "./tar-helpers.js";

const CHUNK = 64 * 1024;

function text(size: number): Buffer {
  const line = "s3dock ships docker images through a bucket; lorem ipsum dolor sit amet 0123456789\n";
  return Buffer.from(line.repeat(Math.ceil(size / line.length) + 1)).subarray(0, size);
}

/** Feeds `data` in pieces of `piece` bytes. */
function source(data: Buffer, piece = 16 * 1024): Readable {
  const pieces: Buffer[] = [];
  for (let i = 0; i < data.length; i += piece) pieces.push(data.subarray(i, i + piece));
  return Readable.from(pieces);
}

async function gzipParallel(data: Buffer, options = { level: 6, chunkSize: CHUNK, workers: 3 }, piece?: number): Promise<Buffer> {
  return collect(source(data, piece).pipe(parallelGzip(options)));
}

/** Offsets of gzip member headers (1f 8b 08) at member boundaries, found by decoding member by member. */
function countMembers(gz: Buffer): number {
  let members = 0;
  let rest = gz;
  while (rest.length > 0) {
    expect(rest[0]).toBe(0x1f);
    expect(rest[1]).toBe(0x8b);
    // Each member ends with CRC32 + ISIZE; find the shortest prefix that gunzips alone.
    let end = 18;
    for (; end <= rest.length; end++) {
      try {
        gunzipSync(rest.subarray(0, end), { finishFlush: 0 });
        if (rest.subarray(0, end).readUInt32LE(end - 4) === gunzipSync(rest.subarray(0, end)).length % 2 ** 32) break;
      } catch {
        // not a whole member yet
      }
    }
    members++;
    rest = rest.subarray(end);
  }
  return members;
}

describe("ParallelGzip", () => {
  const sizes = [0, 1, 100, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 5 * CHUNK + 12345];

  it.each(sizes)("random input of %d bytes gunzips to exactly the input", async (size) => {
    const data = randomBytes(size);
    const gz = await gzipParallel(data);
    expect(gunzipSync(gz).equals(data)).toBe(true);
  });

  it.each(sizes)("text input of %d bytes gunzips to exactly the input and shrinks", async (size) => {
    const data = text(size);
    const gz = await gzipParallel(data, { level: 6, chunkSize: CHUNK, workers: 2 }, 5000);
    expect(gunzipSync(gz).equals(data)).toBe(true);
    if (size > 1000) expect(gz.length).toBeLessThan(size / 5);
  });

  it("writes one member per chunk (a multi-member stream)", async () => {
    const data = text(3 * CHUNK);
    const gz = await gzipParallel(data, { level: 1, chunkSize: CHUNK, workers: 2 });
    expect(countMembers(gz)).toBe(3);
    expect(countMembers(await gzipParallel(text(CHUNK + 1), { level: 1, chunkSize: CHUNK, workers: 2 }))).toBe(2);
  });

  it("an empty input is still one valid gzip member", async () => {
    const gz = await gzipParallel(Buffer.alloc(0));
    expect(gz.length).toBeGreaterThan(0);
    expect(gunzipSync(gz).length).toBe(0);
  });

  it("input arriving in one huge write is cut into chunks all the same", async () => {
    const data = text(4 * CHUNK + 7);
    const gz = await collect(Readable.from([data]).pipe(parallelGzip({ level: 1, chunkSize: CHUNK, workers: 2 })));
    expect(gunzipSync(gz).equals(data)).toBe(true);
    expect(countMembers(gz)).toBe(5);
  });

  it("incompressible chunks go out stored: output barely bigger than input", async () => {
    const data = randomBytes(8 * 128 * 1024);
    const gz = await gzipParallel(data, { level: 9, chunkSize: 128 * 1024, workers: 4 });
    expect(gunzipSync(gz).equals(data)).toBe(true);
    expect(gz.length).toBeLessThan(data.length * 1.002 + 1024);
  });

  it("compressChunk stores a random chunk but compresses a text chunk", async () => {
    const random = randomBytes(256 * 1024);
    const stored = await compressChunk(random, 9);
    // A stored member: 5 bytes of block header per stored block (zlib cuts them at 16 KiB or more) plus the 18-byte gzip frame.
    expect(stored.length).toBeLessThanOrEqual(random.length + 5 * Math.ceil(random.length / 16384) + 18);
    expect(gunzipSync(stored).equals(random)).toBe(true);
    const compressed = await compressChunk(text(256 * 1024), 9);
    expect(compressed.length).toBeLessThan(256 * 1024 / 10);
  });

  it("GNU gzip accepts the output (gzip -t, gunzip -c)", async () => {
    const data = Buffer.concat([text(2 * CHUNK), randomBytes(CHUNK + 99), text(1000)]);
    const gz = await gzipParallel(data, { level: 6, chunkSize: CHUNK, workers: 3 });
    execFileSync("gzip", ["-t"], { input: gz });
    const out = execFileSync("gunzip", ["-c"], { input: gz, maxBuffer: 64 * 1024 * 1024 });
    expect(out.equals(data)).toBe(true);
  });

  it("reads ahead only a bounded amount when the consumer does not read", async () => {
    const workers = 2;
    const piece = 8 * 1024;
    let produced = 0;
    // Incompressible, so buffered output is as big as the input it came from and cannot hide read-ahead.
    const endless = new Readable({
      read() {
        produced += piece;
        this.push(randomBytes(piece));
      },
    });
    const gzip = parallelGzip({ level: 1, chunkSize: CHUNK, workers });
    endless.pipe(gzip); // nobody reads gzip's output
    await new Promise((resolve) => setTimeout(resolve, 300));
    const settled = produced;
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(produced).toBe(settled); // it stopped: backpressure holds
    // chunks in the workers + the one being cut + the output buffer (one member past its mark) + the input buffers
    expect(produced).toBeLessThanOrEqual((workers + 2) * CHUNK + 4 * 64 * 1024);
    endless.destroy();
    gzip.destroy();
  });

  it("propagates a source error", async () => {
    const failing = new Readable({
      read() {
        this.destroy(new Error("docker save broke"));
      },
    });
    const sink = new Writable({ write: (_c, _e, cb) => cb() });
    await expect(pipeline(failing, parallelGzip({ level: 1, chunkSize: CHUNK, workers: 2 }), sink)).rejects.toThrow(/docker save broke/);
  });
});
