import { once } from "node:events";
import { Readable, Writable } from "node:stream";
import { createGunzip, gzipSync } from "node:zlib";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { BufferPool, discard, handedOver, pooledChunks, writeChunks, type PooledChunk } from "../../src/transfer/buffer-pool.js";

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

describe("pooledChunks with chunksHandedOver", () => {
  it("copies each input chunk, then frees it", async () => {
    const pieces = [Buffer.alloc(100_000, 1), Buffer.alloc(200_000, 2)];
    const expected = Buffer.concat(pieces);
    const copied: Buffer[] = [];
    async function* handedOver() {
      yield* pieces;
    }
    for await (const chunk of pooledChunks(handedOver(), new BufferPool(65_536, 2), { chunksHandedOver: true })) {
      copied.push(Buffer.from(chunk.data));
      chunk.release();
    }
    expect(Buffer.concat(copied).equals(expected)).toBe(true);
    expect(pieces.map((piece) => piece.length)).toEqual([0, 0]);
  });
});

describe("handedOver", () => {
  it("frees a buffer only once its last slice is done, as zlib fills one output buffer in several slices", async () => {
    // Two "output buffers", each handed out as several slices, like zlib's chunkSize buffers.
    const first = Buffer.alloc(100_000, 1);
    const second = Buffer.alloc(100_000, 2);
    const slices = [first.subarray(0, 40_000), first.subarray(40_000), second.subarray(0, 10_000), second.subarray(10_000)];
    async function* source() {
      yield* slices;
    }
    const seen: { length: number; firstAlive: number; secondAlive: number }[] = [];
    for await (const chunk of handedOver(source())) {
      seen.push({ length: chunk.length, firstAlive: first.buffer.byteLength, secondAlive: second.buffer.byteLength });
    }
    // While its slices were being read, each buffer was intact; each went once its last slice was done.
    expect(seen).toEqual([
      { length: 40_000, firstAlive: 100_000, secondAlive: 100_000 },
      { length: 60_000, firstAlive: 100_000, secondAlive: 100_000 },
      { length: 10_000, firstAlive: 0, secondAlive: 100_000 },
      { length: 90_000, firstAlive: 0, secondAlive: 100_000 },
    ]);
    expect(second.buffer.byteLength).toBe(0);
  });

  it("frees a whole-buffer chunk as soon as the consumer asks for the next, before the source has one", async () => {
    const first = Buffer.alloc(100_000, 1);
    let produceSecond!: () => void;
    const secondReady = new Promise<void>((resolve) => (produceSecond = resolve));
    async function* source() {
      yield first;
      await secondReady;
      yield Buffer.alloc(100_000, 2);
    }
    const chunks = handedOver(source());
    expect((await chunks.next()).value).toBe(first);
    const asking = chunks.next();
    await new Promise((resolve) => setTimeout(resolve, 5));
    expect(first.buffer.byteLength).toBe(0); // gone while the source is still working on the next
    produceSecond();
    expect((await asking).value?.length).toBe(100_000);
    await chunks.return(undefined);
  });

  it("leaves a buffer alone while its last slice has not come, whatever other buffers arrive", async () => {
    // A stream's read() may join buffered slices into a copy: the copy comes from another buffer,
    // while the source is still filling the first.
    const filling = Buffer.alloc(100_000, 1);
    const joined = Buffer.alloc(50_000, 2);
    async function* source() {
      yield filling.subarray(0, 20_000);
      yield joined;
      yield filling.subarray(20_000, 50_000);
    }
    for await (const chunk of handedOver(source())) {
      expect(chunk.length).toBeGreaterThan(0);
      expect(filling.buffer.byteLength).toBe(100_000);
    }
    expect(joined.buffer.byteLength).toBe(0); // read to its end: freed
  });

  it("zlib with a large output buffer, small input slices and a slow reader: every byte arrives intact", async () => {
    const input = Buffer.concat(Array.from({ length: 64 }, (_, index) => Buffer.from(`line ${index} `.repeat(2000))));
    const gunzip = createGunzip({ chunkSize: 1024 * 1024 });
    const compressed = gzipSync(input);
    const feeding = (async () => {
      for (let offset = 0; offset < compressed.length; offset += 1024) {
        if (!gunzip.write(compressed.subarray(offset, offset + 1024))) await once(gunzip, "drain");
      }
      gunzip.end();
    })();
    const received: Buffer[] = [];
    for await (const chunk of handedOver(gunzip)) {
      received.push(Buffer.from(chunk));
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    await feeding;
    expect(Buffer.concat(received).equals(input)).toBe(true);
  });

  it("leaves buffers from Node's shared slab alone", async () => {
    const small = Buffer.from("small enough for the shared slab");
    async function* source() {
      yield small;
    }
    for await (const chunk of handedOver(source())) expect(chunk.toString()).toBe("small enough for the shared slab");
    expect(small.toString()).toBe("small enough for the shared slab");
  });
});

describe("writeChunks", () => {
  /** Chunks over fresh buffers that record when they are released. */
  async function* chunksOf(pieces: readonly Buffer[], released: number[]): AsyncGenerator<PooledChunk> {
    for (const [index, data] of pieces.entries()) yield { data, release: () => released.push(index) };
  }

  /** A sink that takes its time over every write and records what it got. */
  function slowSink(received: Buffer[], events: string[]): Writable {
    return new Writable({
      highWaterMark: 1,
      write(chunk: Buffer, _encoding, callback) {
        received.push(Buffer.from(chunk));
        setTimeout(() => {
          events.push(`consumed ${chunk.length}`);
          callback();
        }, 2);
      },
    });
  }

  it("writes every byte in slices, releasing each chunk only after the sink has consumed its last slice", async () => {
    const pieces = [Buffer.alloc(10, 1), Buffer.alloc(3, 2), Buffer.alloc(8, 3)];
    const released: number[] = [];
    const received: Buffer[] = [];
    const events: string[] = [];
    const sink = slowSink(received, events);
    await writeChunks(chunksOf(pieces, released), sink, { sliceSize: 4, onChunk: (data) => void events.push(`chunk ${data.length}`) });
    expect(Buffer.concat(received).equals(Buffer.concat(pieces))).toBe(true);
    expect(received.map((slice) => slice.length)).toEqual([4, 4, 2, 3, 4, 4]);
    expect(released).toEqual([0, 1, 2]);
    expect(events).toEqual(["chunk 10", "consumed 4", "consumed 4", "consumed 2", "chunk 3", "consumed 3", "chunk 8", "consumed 4", "consumed 4"]);
    expect(sink.writableEnded).toBe(true);
  });

  it("without a slice size writes each chunk whole", async () => {
    const pieces = [Buffer.alloc(10, 1), Buffer.alloc(3, 2)];
    const released: number[] = [];
    const received: Buffer[] = [];
    await writeChunks(chunksOf(pieces, released), slowSink(received, []));
    expect(received.map((slice) => slice.length)).toEqual([10, 3]);
    expect(released).toEqual([0, 1]);
  });

  it("with queued: 2 hands the sink the next chunk before it has consumed the last, never a third, and releases each once consumed", async () => {
    const events: string[] = [];
    async function* chunks(): AsyncGenerator<PooledChunk> {
      for (const value of [1, 2, 3, 4]) yield { data: Buffer.alloc(4, value), release: () => events.push(`released ${value}`) };
    }
    const received: Buffer[] = [];
    await writeChunks(chunks(), slowSink(received, events), { queued: 2, onChunk: (data) => void events.push(`chunk ${data[0]}`) });
    expect(events).toEqual([
      "chunk 1",
      "chunk 2",
      "consumed 4",
      "released 1",
      "chunk 3",
      "consumed 4",
      "released 2",
      "chunk 4",
      "consumed 4",
      "released 3",
      "consumed 4",
      "released 4",
    ]);
    expect(received.map((slice) => slice[0])).toEqual([1, 2, 3, 4]);
  });

  it("with queued: 2, a sink that fails holding two chunks gets both back and no more are read", async () => {
    const released: number[] = [];
    let pulled = 0;
    async function* endless(): AsyncGenerator<PooledChunk> {
      for (;;) {
        const index = ++pulled;
        yield { data: Buffer.alloc(4), release: () => released.push(index) };
      }
    }
    let writes = 0;
    const sink = new Writable({
      write(_chunk, _encoding, callback) {
        // Takes the second chunk and never answers: the engine went away with it.
        if (++writes === 2) setTimeout(() => sink.destroy(new Error("engine gone")), 5);
        else callback();
      },
    });
    await expect(writeChunks(endless(), sink, { queued: 2 })).rejects.toThrow("engine gone");
    expect(pulled).toBe(3);
    expect(released.sort()).toEqual([1, 2, 3]);
  });

  it("waits for what onChunk returns, as well as the sink, before releasing a chunk", async () => {
    const events: string[] = [];
    let finishHashing!: () => void;
    async function* chunks(): AsyncGenerator<PooledChunk> {
      yield { data: Buffer.alloc(4, 1), release: () => events.push("released") };
    }
    const writing = writeChunks(chunks(), slowSink([], events), {
      onChunk: () => new Promise<void>((resolve) => (finishHashing = resolve)),
    });
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(events).toEqual(["consumed 4"]);
    finishHashing();
    await writing;
    expect(events).toEqual(["consumed 4", "released"]);
  });

  it("a failing onChunk fails the write, destroys the sink and releases the chunk", async () => {
    const released: number[] = [];
    const sink = slowSink([], []);
    const writing = writeChunks(chunksOf([Buffer.alloc(4), Buffer.alloc(4)], released), sink, {
      onChunk: () => Promise.reject(new Error("the hashing thread stopped")),
    });
    await expect(writing).rejects.toThrow("the hashing thread stopped");
    expect(sink.destroyed).toBe(true);
    expect(released).toEqual([0]);
  });

  it("refuses to queue fewer than one chunk, which would wait for ever", async () => {
    await expect(writeChunks(chunksOf([Buffer.alloc(4)], []), slowSink([], []), { queued: 0 })).rejects.toThrow(RangeError);
  });

  it("destroys the sink with the chunks' error, after releasing what it had", async () => {
    const released: number[] = [];
    async function* failing(): AsyncGenerator<PooledChunk> {
      yield* chunksOf([Buffer.alloc(4)], released);
      throw new Error("range failed");
    }
    const sink = slowSink([], []);
    await expect(writeChunks(failing(), sink, { sliceSize: 4 })).rejects.toThrow("range failed");
    expect(released).toEqual([0]);
    expect(sink.destroyed).toBe(true);
  });

  it("fails when the sink fails, and stops reading the chunks", async () => {
    const released: number[] = [];
    let pulled = 0;
    async function* endless(): AsyncGenerator<PooledChunk> {
      for (;;) {
        pulled++;
        yield { data: Buffer.alloc(4), release: () => released.push(pulled) };
      }
    }
    const sink = new Writable({
      write(_chunk, _encoding, callback) {
        // Fails on the third write without answering it, as a stage that dies mid-chunk does.
        if (pulled === 3) sink.destroy(new Error("corrupt input"));
        else callback();
      },
    });
    await expect(writeChunks(endless(), sink, { sliceSize: 4 })).rejects.toThrow("corrupt input");
    expect(pulled).toBe(3);
    expect(released).toEqual([1, 2, 3]);
  });
});

describe("discard", () => {
  it("frees a buffer's memory at once: every view of it becomes empty", () => {
    const buffer = Buffer.allocUnsafeSlow(1 << 20);
    const view = buffer.subarray(10, 20);
    discard(buffer);
    expect(buffer.length).toBe(0);
    expect(view.length).toBe(0);
  });

  it("frees a small buffer that owns its memory, such as a 64 KiB socket read (Buffer.poolSize is 64 KiB on Node 24)", () => {
    const read = Buffer.allocUnsafeSlow(Buffer.poolSize);
    discard(read);
    expect(read.length).toBe(0);
  });

  it("leaves buffers on Node's shared slab alone", () => {
    const small = Buffer.from("shared slab");
    const neighbour = Buffer.from("neighbour");
    discard(small);
    expect(small.toString()).toBe("shared slab");
    expect(neighbour.toString()).toBe("neighbour");
  });
});
