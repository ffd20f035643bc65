/** The layers format's pure parts and its push pipeline over the fake bucket: identity, chain IDs, the three `docker save` layouts. */
import { createHash, randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { gunzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { sameImage } from "../../src/domain/image-identity.js";
import { chainIds, sha256Digest, type LayerDocument } from "../../src/domain/oci.js";
import { BlobStore } from "../../src/storage/blob-store.js";
import { LayerGuessMissed, pushLayers } from "../../src/transfer/layer-push.js";
import { FakeObjectStore } from "./fakes.js";
import { makeTar } from "./tar-helpers.js";

const hex = (bytes: Buffer | string) => createHash("sha256").update(bytes).digest("hex");

describe("sameImage", () => {
  const layers = ["sha256:" + "a".repeat(64), "sha256:" + "b".repeat(64)];
  it("compares config digests when both sides know theirs", () => {
    expect(sameImage({ configDigest: "sha256:1", diffIds: layers }, { configDigest: "sha256:1", diffIds: [] })).toBe(true);
    expect(sameImage({ configDigest: "sha256:1", diffIds: layers }, { configDigest: "sha256:2", diffIds: layers })).toBe(false);
  });
  it("else compares diff IDs and creation time, whatever the fractional digits", () => {
    const a = { diffIds: layers, created: "2025-07-21T21:18:00.1Z" };
    expect(sameImage(a, { configDigest: "sha256:1", diffIds: layers, created: "2025-07-21T21:18:00.100000000Z" })).toBe(true);
    expect(sameImage(a, { diffIds: layers, created: "2025-07-21T21:18:00.2Z" })).toBe(false);
    expect(sameImage(a, { diffIds: [...layers].reverse() })).toBe(false);
  });
  it("cannot tell without either", () => {
    expect(sameImage({ diffIds: [] }, { diffIds: layers })).toBeUndefined();
  });
});

describe("chainIds", () => {
  it("is the first diff ID, then sha256 of the previous chain, a space and the next diff ID", () => {
    const [a, b] = ["sha256:" + "1".repeat(64), "sha256:" + "2".repeat(64)];
    expect(chainIds([a, b])).toEqual([a, sha256Digest(`${a} ${b}`)]);
  });
});

/** A `docker save` tar in Docker 20.10's layout: layer dirs named by legacy IDs, the config, manifest.json. */
async function legacySave(layerBodies: Buffer[]): Promise<{ tar: Buffer; diffIds: string[]; config: Buffer }> {
  const diffIds = layerBodies.map((body) => `sha256:${hex(body)}`);
  const config = Buffer.from(JSON.stringify({ created: "2025-01-01T00:00:00Z", rootfs: { type: "layers", diff_ids: diffIds } }));
  const dirs = layerBodies.map(() => randomBytes(32).toString("hex"));
  const tar = await makeTar([
    ...layerBodies.map((body, i) => ({ header: { name: `${dirs[i]}/layer.tar` }, body })),
    { header: { name: `${hex(config)}.json` }, body: config },
    { header: { name: "manifest.json" }, body: JSON.stringify([{ Config: `${hex(config)}.json`, RepoTags: ["a:b"], Layers: dirs.map((dir) => `${dir}/layer.tar`) }]) },
  ]);
  return { tar, diffIds, config };
}

const gzip = { level: 1, chunkSize: 64 * 1024, workers: 2 };

describe("pushLayers", () => {
  it("uploads every layer of Docker 20.10's layout as a verified gzip blob, then only new ones", async () => {
    const store = new FakeObjectStore();
    const blobs = new BlobStore(store, { partSizeBytes: 5 * 1024 * 1024, concurrency: 2 });
    const layers = [randomBytes(200_000), randomBytes(50_000)];
    const save = await legacySave(layers);
    const first = await pushLayers(Readable.from([save.tar]), blobs, { diffIds: save.diffIds, stored: new Map(), gzip, guessBySize: true });
    expect(first.layers.map((layer) => layer.uploaded)).toEqual([true, true]);
    for (const [i, layer] of first.layers.entries()) {
      const stored = store.objects.get(`blobs/sha256/${layer.blob.digest.slice(7)}`)!.body;
      expect(`sha256:${hex(stored)}`).toBe(layer.blob.digest);
      expect(gunzipSync(stored).equals(layers[i]!)).toBe(true);
    }
    expect([...store.objects.keys()].filter((key) => key.startsWith("blobs/uploads/"))).toEqual([]);

    // The bottom layer stored: recognised by its length, hashed to confirm, not uploaded again.
    const stored = new Map<string, LayerDocument>([[save.diffIds[0]!, { diff_id: save.diffIds[0]!, blob: first.layers[0]!.blob, uncompressed_size: first.layers[0]!.uncompressedSize! }]]);
    const again = await legacySave([layers[0]!, randomBytes(50_000)]);
    const second = await pushLayers(Readable.from([again.tar]), blobs, { diffIds: again.diffIds, stored, gzip, guessBySize: true });
    expect(second.layers.map((layer) => layer.uploaded)).toEqual([false, true]);
    expect(second.layers[0]!.blob).toEqual(first.layers[0]!.blob);
  });

  it("fails with LayerGuessMissed when a layer of a stored layer's length is another, and succeeds without guessing", async () => {
    const store = new FakeObjectStore();
    const blobs = new BlobStore(store, { partSizeBytes: 5 * 1024 * 1024, concurrency: 2 });
    const storedLayer = randomBytes(10_000);
    const doc: LayerDocument = { diff_id: `sha256:${hex(storedLayer)}`, blob: { mediaType: "x", digest: `sha256:${hex("x")}`, size: 1 }, uncompressed_size: storedLayer.length };
    const save = await legacySave([randomBytes(storedLayer.length)]);
    const options = { diffIds: save.diffIds, stored: new Map([[doc.diff_id, doc]]), gzip };
    await expect(pushLayers(Readable.from([save.tar]), blobs, { ...options, guessBySize: true })).rejects.toBeInstanceOf(LayerGuessMissed);
    const result = await pushLayers(Readable.from([save.tar]), blobs, { ...options, guessBySize: false });
    expect(result.layers[0]!.uploaded).toBe(true);
  });

  it("stores the containerd store's gzip layers as they are, under the digests their names give", async () => {
    const store = new FakeObjectStore();
    const blobs = new BlobStore(store, { partSizeBytes: 5 * 1024 * 1024, concurrency: 2 });
    const { gzipSync } = await import("node:zlib");
    const body = randomBytes(2 * 1024 * 1024);
    const compressed = gzipSync(body);
    const diffId = `sha256:${hex(body)}`;
    const config = Buffer.from(JSON.stringify({ rootfs: { type: "layers", diff_ids: [diffId] } }));
    const tar = await makeTar([
      { header: { name: `blobs/sha256/${hex(compressed)}` }, body: compressed },
      { header: { name: `blobs/sha256/${hex(config)}` }, body: config },
      { header: { name: "index.json" }, body: "{}" },
      { header: { name: "manifest.json" }, body: JSON.stringify([{ Config: `blobs/sha256/${hex(config)}`, RepoTags: [], Layers: [`blobs/sha256/${hex(compressed)}`] }]) },
    ]);
    const result = await pushLayers(Readable.from([tar]), blobs, { diffIds: [diffId], stored: new Map(), gzip, guessBySize: true });
    expect(result.layers).toMatchObject([{ diffId, uploaded: true, blob: { digest: `sha256:${hex(compressed)}`, size: compressed.length } }]);
    expect(store.objects.get(`blobs/sha256/${hex(compressed)}`)!.body.equals(compressed)).toBe(true);
  });

  it("refuses an export whose layers are not the ones the engine reports", async () => {
    const store = new FakeObjectStore();
    const blobs = new BlobStore(store, { partSizeBytes: 5 * 1024 * 1024, concurrency: 2 });
    const save = await legacySave([randomBytes(1000)]);
    await expect(pushLayers(Readable.from([save.tar]), blobs, { diffIds: [`sha256:${"0".repeat(64)}`], stored: new Map(), gzip, guessBySize: true })).rejects.toThrow(/other layers/);
  });
});
