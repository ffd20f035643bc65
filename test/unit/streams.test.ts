import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterAll, describe, expect, it } from "vitest";
import { IntegrityError, NotFoundError, OperationError, RemoteError } from "../../src/errors.js";
import { identityFromArchive } from "../../src/transfer/archive-manifest.js";
import { OUTSIDE_DOCKERFILE_NAME, packBuildContext } from "../../src/transfer/build-context.js";
import { DigestTap, ThreadedDigester } from "../../src/transfer/digest.js";
import { holdBack } from "../../src/transfer/hold-back.js";
import type { PooledChunk } from "../../src/transfer/buffer-pool.js";
import { rangedDownload } from "../../src/transfer/ranged-download.js";
import { rewriteTarTimes } from "../../src/transfer/tar-times.js";
import { FakeObjectStore } from "./fakes.js";
import { collect, makeTar, readTar } from "./tar-helpers.js";

const pieces = (data: Buffer, size: number): Buffer[] => {
  const out: Buffer[] = [];
  for (let i = 0; i < data.length; i += size) out.push(data.subarray(i, i + size));
  return out;
};

describe("DigestTap", () => {
  it.each([0, 1, 1000, 300_000])("md5, sha256 and size of %d bytes equal node crypto over the whole", async (size) => {
    const data = randomBytes(size);
    const seen: number[] = [];
    const tap = new DigestTap((total) => seen.push(total));
    const out = await collect(Readable.from(pieces(data, 7777)).pipe(tap));
    expect(out.equals(data)).toBe(true);
    expect(tap.digests()).toEqual({
      md5: createHash("md5").update(data).digest("hex"),
      sha256: createHash("sha256").update(data).digest("hex"),
      size,
    });
    if (size > 0) expect(seen.at(-1)).toBe(size);
  });

  it("refuses to report digests before the end", () => {
    const tap = new DigestTap();
    tap.write(Buffer.from("abc"));
    expect(() => tap.digests()).toThrow(/before the stream ended/);
  });
});

describe("ThreadedDigester", () => {
  /** `data` copied into shared memory, at an offset so views do not start at the memory's start. */
  const shared = (data: Buffer): Buffer => {
    const memory = Buffer.from(new SharedArrayBuffer(data.length + 3));
    data.copy(memory, 3);
    return memory.subarray(3);
  };

  it.each([0, 1, 300_000])("md5, sha256 and size of %d bytes in pieces equal node crypto over the whole", async (size) => {
    const data = randomBytes(size);
    const digester = new ThreadedDigester();
    try {
      await Promise.all(pieces(shared(data), 7777).map((piece) => digester.update(piece)));
      expect(digester.size).toBe(size);
      expect(await digester.digests()).toEqual({
        md5: createHash("md5").update(data).digest("hex"),
        sha256: createHash("sha256").update(data).digest("hex"),
        size,
      });
    } finally {
      await digester.close();
    }
  });

  it("computes only the digests asked for", async () => {
    const digester = new ThreadedDigester({ md5: false });
    try {
      await digester.update(shared(Buffer.from("abc")));
      expect(await digester.digests()).toEqual({ md5: "", sha256: createHash("sha256").update("abc").digest("hex"), size: 3 });
    } finally {
      await digester.close();
    }
  });

  it("refuses memory the thread cannot read in place", async () => {
    const digester = new ThreadedDigester();
    try {
      expect(() => digester.update(Buffer.from("abc"))).toThrow(/shared memory/);
    } finally {
      await digester.close();
    }
  });

  it("once the thread has stopped, every update and the digests reject instead of waiting forever", async () => {
    const digester = new ThreadedDigester();
    await digester.close();
    await expect(digester.update(shared(Buffer.from("abc")))).rejects.toThrow(/checksum thread stopped/);
    await expect(digester.digests()).rejects.toThrow(/checksum thread stopped/);
  });

  it("a thread that dies with an update pending rejects it as a local failure, not as bad bytes", async () => {
    const digester = new ThreadedDigester();
    try {
      await digester.update(shared(Buffer.from("abc")));
      await digester.digests();
      // Hashing after the digests throws inside the thread and kills it, with this update waiting.
      const failure = await digester.update(shared(Buffer.from("def"))).catch((error: unknown) => error);
      expect(failure).toBeInstanceOf(OperationError);
      expect((failure as Error).message).toMatch(/checksum thread failed/);
      await expect(digester.update(shared(Buffer.from("ghi")))).rejects.toBeInstanceOf(OperationError);
    } finally {
      await digester.close();
    }
  });
});

describe("holdBack", () => {
  /** Pooled-chunk stand-ins over `data` in pieces of `size`, recording which were released. */
  function chunksOf(data: Buffer, size: number, released: Set<number>): { chunks: PooledChunk[]; source: () => AsyncGenerator<PooledChunk> } {
    const chunks = pieces(data, size).map((piece, index) => ({ data: piece, release: () => released.add(index) }));
    return {
      chunks,
      source: async function* () {
        yield* chunks;
      },
    };
  }

  it("passes every chunk through, whole and in order, once release approves", async () => {
    const data = randomBytes(100_000);
    const released = new Set<number>();
    let approved = false;
    const { chunks, source } = chunksOf(data, 1000, released);
    const out: PooledChunk[] = [];
    for await (const chunk of holdBack(source(), 4096, () => void (approved = true))) out.push(chunk);
    expect(approved).toBe(true);
    expect(out).toEqual(chunks);
    expect(released.size).toBe(0); // releasing is the consumer's business
  });

  it("keeps at least the last N bytes back until the input ends and release resolves", async () => {
    const sizes = [250, 30, 200, 5, 120];
    let approve!: () => void;
    let inputEnded = false;
    async function* input(): AsyncGenerator<PooledChunk> {
      for (const size of sizes) yield { data: Buffer.alloc(size, size % 256), release: () => undefined };
      inputEnded = true;
    }
    const written = sizes.reduce((sum, size) => sum + size, 0);
    let passed = 0;
    const seenBeforeApproval: number[] = [];
    const consuming = (async () => {
      for await (const chunk of holdBack(input(), 100, () => new Promise<void>((resolve) => (approve = resolve)))) {
        passed += chunk.data.length;
        if (!inputEnded) seenBeforeApproval.push(passed);
      }
    })();
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(inputEnded).toBe(true);
    expect(passed).toBeLessThanOrEqual(written - 100); // release has not resolved yet
    expect(passed).toBeGreaterThan(0); // it does pass bytes on before the end
    approve();
    await consuming;
    expect(passed).toBe(written);
  });

  it("a short input is held entirely", async () => {
    let passedDuringRelease = -1;
    let passed = 0;
    async function* input(): AsyncGenerator<PooledChunk> {
      yield { data: Buffer.alloc(500), release: () => undefined };
    }
    for await (const chunk of holdBack(input(), 1000, () => void (passedDuringRelease = passed))) passed += chunk.data.length;
    expect(passedDuringRelease).toBe(0);
    expect(passed).toBe(500);
  });

  it("release throwing gives the held chunks back unseen and fails the consumer", async () => {
    const data = randomBytes(10_000);
    const released = new Set<number>();
    const { chunks, source } = chunksOf(data, 999, released);
    const passed: PooledChunk[] = [];
    const consume = async () => {
      for await (const chunk of holdBack(source(), 2048, () => Promise.reject(new IntegrityError("checksum mismatch")))) passed.push(chunk);
    };
    await expect(consume()).rejects.toThrow(/checksum mismatch/);
    const passedBytes = passed.reduce((sum, chunk) => sum + chunk.data.length, 0);
    expect(passedBytes).toBeLessThanOrEqual(data.length - 2048);
    expect(passed).toEqual(chunks.slice(0, passed.length));
    // Everything not passed on went back to its pool.
    expect([...released].sort((a, b) => a - b)).toEqual(chunks.map((_, index) => index).slice(passed.length));
  });

  it("a consumer that stops early leaves no held chunk unreleased", async () => {
    const released = new Set<number>();
    const { chunks, source } = chunksOf(randomBytes(10_000), 1000, released);
    const held = holdBack(source(), 3000, () => undefined);
    const first = await held.next();
    expect(first.value).toBe(chunks[0]);
    await held.return(undefined);
    // The first went to the consumer; the ones behind it were held and are given back.
    expect([...released].sort((a, b) => a - b)).toEqual([1, 2, 3]);
  });
});

describe("rewriteTarTimes", () => {
  const longName = `${"deep/".repeat(25)}file-with-a-long-name.txt`;
  const entries = [
    { header: { name: "dir/", type: "directory" as const, mode: 0o755, mtime: new Date(1_600_000_000_000) } },
    { header: { name: "dir/a.txt", mode: 0o644, mtime: new Date(1_600_000_001_000), uid: 1000, gid: 1000 }, body: "hello\n" },
    { header: { name: longName, mode: 0o600, mtime: new Date(1_600_000_002_000) }, body: randomBytes(5000) },
    { header: { name: "link", type: "symlink" as const, linkname: "dir/a.txt", mtime: new Date(1_600_000_003_000) } },
    { header: { name: "empty", mode: 0o644, mtime: new Date(1_600_000_004_000) }, body: "" },
    {
      header: { name: "pax.txt", mtime: new Date(1_600_000_005_000), pax: { atime: "1600000005.5", ctime: "1600000005.5", "SCHILY.xattr.user.k": "v" } },
      body: "pax\n",
    },
  ];

  it("sets every mtime to the date and keeps names, types, modes, links and contents", async () => {
    expect(longName.length).toBeGreaterThan(100);
    const original = await readTar(await makeTar(entries));
    const when = new Date(Date.UTC(2025, 6, 21, 21, 18));
    const rewritten = await readTar(rewriteTarTimes(Readable.from([await makeTar(entries)]), when));
    expect(rewritten.map((e) => e.header.name)).toEqual(original.map((e) => e.header.name));
    expect(rewritten.map((e) => e.header.name)).toContain(longName);
    for (const [i, entry] of rewritten.entries()) {
      expect(entry.header.mtime?.getTime()).toBe(when.getTime());
      expect(entry.header.type).toBe(original[i]!.header.type);
      expect(entry.header.mode).toBe(original[i]!.header.mode);
      expect(entry.header.linkname ?? null).toBe(original[i]!.header.linkname ?? null);
      expect(entry.header.uid).toBe(original[i]!.header.uid);
      expect(entry.body.equals(original[i]!.body)).toBe(true);
    }
    const pax = (rewritten.find((e) => e.header.name === "pax.txt")!.header.pax ?? {}) as Record<string, string | undefined>;
    expect(pax.atime).toBeUndefined();
    expect(pax.ctime).toBeUndefined();
    expect(pax["SCHILY.xattr.user.k"]).toBe("v");
  });

  it("gives the same bytes for inputs that differ only in their times", async () => {
    const when = new Date(Date.UTC(2025, 0, 1));
    const later = entries.map((entry) => ({ ...entry, header: { ...entry.header, mtime: new Date(1_700_000_000_000) } }));
    const a = await collect(rewriteTarTimes(Readable.from([await makeTar(entries)]), when));
    const b = await collect(rewriteTarTimes(Readable.from([await makeTar(later)]), when));
    expect(a.equals(b)).toBe(true);
  });

  it("fails when the input is not a tar", async () => {
    await expect(collect(rewriteTarTimes(Readable.from([Buffer.alloc(1024, 7)]), new Date()))).rejects.toThrow();
  });
});

describe("rangedDownload", () => {
  const KEY = "images/a/202507/a-20250721-2118-f7a5a27.tar.gz";

  /** The ranges joined, each copied and released as a consumer would. */
  async function collectRanges(ranges: AsyncIterable<PooledChunk>): Promise<Buffer> {
    const parts: Buffer[] = [];
    for await (const range of ranges) {
      parts.push(Buffer.from(range.data));
      range.release();
    }
    return Buffer.concat(parts);
  }

  function storeWith(data: Buffer): FakeObjectStore {
    const store = new FakeObjectStore();
    store.put(KEY, data);
    return store;
  }

  it("delivers the ranges in order", async () => {
    const data = randomBytes(100_003);
    const store = storeWith(data);
    // Later ranges answer first: reassembly must still be in order.
    store.beforeGetRange = (_key, start) => new Promise((resolve) => setTimeout(resolve, 20 - (start / 10_000) * 2));
    const out = await collectRanges(rangedDownload(store, KEY, { size: data.length, rangeSize: 10_000, concurrency: 4, retries: 0 }));
    expect(out.equals(data)).toBe(true);
    expect(store.count("getRange")).toBe(11);
  });

  it("lands the ranges in concurrency + 1 reused buffers", async () => {
    const data = randomBytes(100_000);
    const store = storeWith(data);
    const memory = new Set<ArrayBufferLike>();
    const parts: Buffer[] = [];
    for await (const range of rangedDownload(store, KEY, { size: data.length, rangeSize: 5_000, concurrency: 3, retries: 0 })) {
      memory.add(range.data.buffer);
      parts.push(Buffer.from(range.data));
      range.release();
    }
    expect(Buffer.concat(parts).equals(data)).toBe(true);
    expect(memory.size).toBe(4);
  });

  it.each([false, true])("lands the ranges in shared memory only when asked (sharedMemory: %s)", async (sharedMemory) => {
    const data = randomBytes(30_000);
    const kinds = new Set<boolean>();
    const parts: Buffer[] = [];
    for await (const range of rangedDownload(storeWith(data), KEY, { size: data.length, rangeSize: 10_000, concurrency: 2, retries: 0, sharedMemory })) {
      kinds.add(range.data.buffer instanceof SharedArrayBuffer);
      parts.push(Buffer.from(range.data));
      range.release();
    }
    expect(Buffer.concat(parts).equals(data)).toBe(true);
    expect([...kinds]).toEqual([sharedMemory]);
  });

  it("waits for the consumer to release a range before reusing its buffer", async () => {
    const data = randomBytes(40_000);
    const store = storeWith(data);
    const ranges = rangedDownload(store, KEY, { size: data.length, rangeSize: 10_000, concurrency: 1, retries: 0 });
    const first = (await ranges.next()).value as PooledChunk;
    const second = (await ranges.next()).value as PooledChunk;
    // Both buffers are out now: the third range cannot start until one comes back.
    const third = ranges.next();
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(store.count("getRange")).toBe(2);
    expect(Buffer.concat([first.data, second.data]).equals(data.subarray(0, 20_000))).toBe(true);
    first.release();
    expect(((await third).value as PooledChunk).data.equals(data.subarray(20_000, 30_000))).toBe(true);
    await ranges.return(undefined);
  });

  it("runs ranges concurrently up to the limit", async () => {
    const data = randomBytes(80_000);
    const store = storeWith(data);
    let running = 0;
    let peak = 0;
    store.beforeGetRange = async () => {
      running++;
      peak = Math.max(peak, running);
      await new Promise((resolve) => setTimeout(resolve, 10));
      running--;
    };
    const out = await collectRanges(rangedDownload(store, KEY, { size: data.length, rangeSize: 5_000, concurrency: 3, retries: 0 }));
    expect(out.equals(data)).toBe(true);
    expect(peak).toBe(3);
  });

  it("retries a range that fails twice, then succeeds", async () => {
    const data = randomBytes(30_000);
    const store = storeWith(data);
    const failures = new Map<number, number>();
    const retried: string[] = [];
    store.beforeGetRange = (_key, start) => {
      if (start !== 10_000) return;
      const count = failures.get(start) ?? 0;
      failures.set(start, count + 1);
      if (count < 2) throw new RemoteError("connection reset");
    };
    const out = await collectRanges(
      rangedDownload(store, KEY, { size: data.length, rangeSize: 10_000, concurrency: 2, retries: 3, onRetry: (m) => retried.push(m) }),
    );
    expect(out.equals(data)).toBe(true);
    expect(failures.get(10_000)).toBe(3);
    expect(retried).toHaveLength(2);
    expect(retried[0]).toMatch(/range 10000-19999 failed \(attempt 1\): connection reset/);
  });

  it("gives up after the retries", async () => {
    const store = storeWith(randomBytes(1000));
    store.beforeGetRange = () => {
      throw new RemoteError("always broken");
    };
    await expect(collectRanges(rangedDownload(store, KEY, { size: 1000, rangeSize: 1000, concurrency: 1, retries: 1 }))).rejects.toThrow(/always broken/);
    expect(store.count("getRange")).toBe(2);
  });

  it("does not retry NotFoundError", async () => {
    const store = new FakeObjectStore();
    await expect(collectRanges(rangedDownload(store, KEY, { size: 1000, rangeSize: 500, concurrency: 1, retries: 5 }))).rejects.toThrow(NotFoundError);
    expect(store.count("getRange")).toBe(1);
  });

  it("detects a short read (the object is smaller than recorded)", async () => {
    const store = storeWith(randomBytes(900));
    await expect(collectRanges(rangedDownload(store, KEY, { size: 1000, rangeSize: 1000, concurrency: 1, retries: 0 }))).rejects.toThrow(/short read.*got 900/);
  });

  it("an empty object yields nothing and makes no request", async () => {
    const store = storeWith(Buffer.alloc(0));
    expect((await collectRanges(rangedDownload(store, KEY, { size: 0, rangeSize: 10, concurrency: 2, retries: 0 }))).length).toBe(0);
    expect(store.count("getRange")).toBe(0);
  });
});

describe("identityFromArchive", () => {
  const config = JSON.stringify({ created: "2025-07-21T21:18:00.123456789Z", rootfs: { type: "layers", diff_ids: ["sha256:" + "cd".repeat(32)] } });
  const hex = createHash("sha256").update(config).digest("hex");
  const expected = { configDigest: `sha256:${hex}`, diffIds: ["sha256:" + "cd".repeat(32)], created: "2025-07-21T21:18:00.123456789Z" };

  it("reads Docker 20.10's layout: Config <hex>.json, before manifest.json", async () => {
    const tarBytes = await makeTar([
      { header: { name: "layer/layer.tar" }, body: randomBytes(3000) },
      { header: { name: `${hex}.json` }, body: config },
      { header: { name: "manifest.json" }, body: JSON.stringify([{ Config: `${hex}.json`, RepoTags: ["a:b"], Layers: [] }]) },
    ]);
    expect(await identityFromArchive(Readable.from([tarBytes]))).toEqual(expected);
  });

  it("reads the OCI layout of Docker 25+: Config blobs/sha256/<hex>", async () => {
    const tarBytes = await makeTar([
      { header: { name: `blobs/sha256/${"ef".repeat(32)}` }, body: randomBytes(3000) },
      { header: { name: `blobs/sha256/${hex}` }, body: config },
      { header: { name: "index.json" }, body: "{}" },
      { header: { name: "manifest.json" }, body: JSON.stringify([{ Config: `blobs/sha256/${hex}`, RepoTags: ["a:b"], Layers: [] }]) },
    ]);
    expect(await identityFromArchive(Readable.from([tarBytes]))).toEqual(expected);
  });

  it("keeps the digest alone when the config is missing or not JSON", async () => {
    const tarBytes = await makeTar([
      { header: { name: `blobs/sha256/${hex}` }, body: "{oops" },
      { header: { name: "manifest.json" }, body: JSON.stringify([{ Config: `blobs/sha256/${hex}`, RepoTags: ["a:b"], Layers: [] }]) },
    ]);
    expect(await identityFromArchive(Readable.from([tarBytes]))).toEqual({ configDigest: `sha256:${hex}`, diffIds: [], created: undefined });
  });

  it.each([
    ["no manifest", [{ header: { name: "x" }, body: "y" }]],
    ["a manifest that is not JSON", [{ header: { name: "manifest.json" }, body: "{oops" }]],
    ["a manifest without a digest", [{ header: { name: "manifest.json" }, body: '[{"Config":"config.json"}]' }]],
  ])("%s → undefined", async (_label, tarEntries) => {
    expect(await identityFromArchive(Readable.from([await makeTar(tarEntries)]))).toBeUndefined();
  });
});

describe("packBuildContext", () => {
  const root = mkdtempSync(join(tmpdir(), "s3dock-context-"));
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  function tree(files: Record<string, string>): string {
    const dir = mkdtempSync(join(root, "ctx-"));
    for (const [path, content] of Object.entries(files)) {
      mkdirSync(join(dir, path, ".."), { recursive: true });
      writeFileSync(join(dir, path), content);
    }
    return dir;
  }

  async function names(dir: string, dockerfile = join(dir, "Dockerfile")) {
    const context = await packBuildContext(dir, dockerfile);
    const entries = await readTar(context.stream);
    return { dockerfile: context.dockerfile, files: entries.filter((e) => e.header.type === "file").map((e) => e.header.name).sort(), entries };
  }

  it("applies .dockerignore with ! exceptions, ** and directories", async () => {
    const dir = tree({
      Dockerfile: "FROM scratch\n",
      ".dockerignore": "# comment\n\nlogs\n**/*.tmp\n*.md\n!README.md\nsecret/\nvendor\n!vendor/keep.txt\n",
      "README.md": "r",
      "NOTES.md": "n",
      "app.js": "a",
      "logs/a.log": "l",
      "src/main.js": "m",
      "src/cache.tmp": "t",
      "src/deep/x.tmp": "t",
      "secret/key": "k",
      "vendor/drop.txt": "d",
      "vendor/keep.txt": "k",
    });
    const { files, dockerfile } = await names(dir);
    expect(dockerfile).toBe("Dockerfile");
    expect(files).toEqual([".dockerignore", "Dockerfile", "README.md", "app.js", "src/main.js", "vendor/keep.txt"]);
  });

  it("always sends the Dockerfile and .dockerignore, even when ignored", async () => {
    const dir = tree({ Dockerfile: "FROM scratch\n", ".dockerignore": "*\n", "app.js": "a" });
    expect((await names(dir)).files).toEqual([".dockerignore", "Dockerfile"]);
  });

  it("sends a nested Dockerfile under its relative path", async () => {
    const dir = tree({ "docker/prod.Dockerfile": "FROM scratch\n", ".dockerignore": "docker\n", "app.js": "a" });
    const { files, dockerfile } = await names(dir, join(dir, "docker", "prod.Dockerfile"));
    expect(dockerfile).toBe("docker/prod.Dockerfile");
    expect(files).toContain("docker/prod.Dockerfile");
    expect(files).toContain("app.js");
  });

  it("carries a Dockerfile from outside the context as .s3dock.Dockerfile", async () => {
    const outside = tree({ "Dockerfile.outside": "FROM scratch\nCOPY app.js /\n" });
    const dir = tree({ "app.js": "a" });
    const { files, dockerfile, entries } = await names(dir, join(outside, "Dockerfile.outside"));
    expect(dockerfile).toBe(OUTSIDE_DOCKERFILE_NAME);
    expect(files).toEqual([OUTSIDE_DOCKERFILE_NAME, "app.js"]);
    expect(entries.find((e) => e.header.name === OUTSIDE_DOCKERFILE_NAME)!.body.toString()).toBe("FROM scratch\nCOPY app.js /\n");
  });

  it("keeps symlinks as links", async () => {
    const dir = tree({ Dockerfile: "FROM scratch\n", "target.txt": "t" });
    symlinkSync("target.txt", join(dir, "link.txt"));
    const { entries } = await names(dir);
    const link = entries.find((e) => e.header.name === "link.txt");
    expect(link?.header.type).toBe("symlink");
    expect(link?.header.linkname).toBe("target.txt");
  });
});
