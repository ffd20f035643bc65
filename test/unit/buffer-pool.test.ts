import { Readable } from "node:stream";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { BufferPool, pooledChunks, type PooledChunk } from "../../src/transfer/buffer-pool.js";

const source = (pieces: readonly Buffer[]) => Readable.from(pieces, { objectMode: false });

describe("BufferPool", () => {
  it("allocates up to its capacity, then makes takers wait for a buffer to come back", async () => {
    const pool = new BufferPool(16, 2);
    const a = await pool.take();
    const b = await pool.take();
    expect(a).not.toBe(b);
    let third: Buffer | undefined;
    const waiting = pool.take().then((buffer) => (third = buffer));
    await new Promise((resolve) => setImmediate(resolve));
    expect(third).toBeUndefined();
    pool.give(a);
    await waiting;
    expect(third).toBe(a);
  });

  it("reuses returned buffers instead of allocating new ones", async () => {
    const pool = new BufferPool(16, 3);
    const a = await pool.take();
    pool.give(a);
    expect(await pool.take()).toBe(a);
  });
});

describe("pooledChunks", () => {
  it("cuts any stream into full chunks and a shorter last one, bytes in order", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.uint8Array({ maxLength: 40 }), { maxLength: 12 }), fc.integer({ min: 1, max: 17 }), async (arrays, size) => {
        const pieces = arrays.map((array) => Buffer.from(array));
        const input = Buffer.concat(pieces);
        const seen: Buffer[] = [];
        for await (const chunk of pooledChunks(source(pieces), new BufferPool(size, 2))) {
          seen.push(Buffer.from(chunk.data));
          chunk.release();
        }
        expect(Buffer.concat(seen).equals(input)).toBe(true);
        expect(seen.slice(0, -1).every((chunk) => chunk.length === size)).toBe(true);
        expect(seen.at(-1)!.length).toBeGreaterThan(input.length === 0 ? -1 : 0);
        expect(seen.length).toBe(Math.max(1, Math.ceil(input.length / size)));
      }),
    );
  });

  it("yields one empty chunk for an empty stream", async () => {
    const chunks: PooledChunk[] = [];
    for await (const chunk of pooledChunks(source([]), new BufferPool(8, 1))) chunks.push(chunk);
    expect(chunks.map((chunk) => chunk.data.length)).toEqual([0]);
  });

  it("stops reading while every buffer is out, and goes on once one is released", async () => {
    let read = 0;
    const body = Readable.from(
      (function* () {
        for (let i = 0; i < 10; i++) {
          read++;
          yield Buffer.alloc(4, i);
        }
      })(),
    );
    const chunks = pooledChunks(body, new BufferPool(4, 2));
    const first = (await chunks.next()).value as PooledChunk;
    const second = (await chunks.next()).value as PooledChunk;
    const third = chunks.next();
    await new Promise((resolve) => setTimeout(resolve, 20));
    const readWhileFull = read;
    expect(readWhileFull).toBeLessThan(10);
    first.release();
    const next = (await third).value as PooledChunk;
    // The released buffer is the one refilled: the pool never grows past its capacity.
    expect(next.data.buffer).toBe(first.data.buffer);
    expect(next.data.buffer).not.toBe(second.data.buffer);
    expect([...next.data]).toEqual([2, 2, 2, 2]);
    second.release();
    next.release();
    await chunks.return(undefined);
  });
});
