import { createHash, randomBytes } from "node:crypto";
import { gunzipSync, gzipSync } from "node:zlib";
import { beforeEach, describe, expect, it } from "vitest";
import { ConflictError, IntegrityError, NotFoundError, RemoteError, UsageError } from "../../src/errors.js";
import { imageMetadataSchema, parseDocument } from "../../src/domain/documents.js";
import { imageKey, metadataKeyFor, parseImageKey } from "../../src/domain/keys.js";
import { parseImageRef } from "../../src/domain/names.js";
import { formatLocalMonth, isRfc3339 } from "../../src/domain/time.js";
import { AuditLog } from "../../src/services/audit.js";
import { Lister } from "../../src/services/lister.js";
import { Promoter } from "../../src/services/promoter.js";
import { Puller } from "../../src/services/puller.js";
import { Pusher } from "../../src/services/pusher.js";
import { Tagger } from "../../src/services/tagger.js";
import { collect, readTar } from "./tar-helpers.js";
import { fakeContext, type FakeContext, type StoreOperation } from "./fakes.js";

const REF = "shop:20250721-2118-f7a5a27";
const REF2 = "shop:20250801-0930-0123abc";
const MONTH = "202507"; // the fake clock's month (local time)
const KEY = imageKey(parseImageRef(REF), MONTH);
const KEY2 = imageKey(parseImageRef(REF2), MONTH);

let ctx: FakeContext;
beforeEach(() => {
  ctx = fakeContext();
});

async function push(reference: string, content = reference) {
  if (!ctx.docker.images.has(reference)) ctx.docker.addImage(reference, content);
  return new Pusher(ctx).push(reference);
}

type PutText = Extract<StoreOperation, { op: "putText" }>;
const putTexts = (key: string): PutText[] => ctx.store.operations.filter((o): o is PutText => o.op === "putText" && o.key === key);
const auditEvents = (): (Record<string, unknown> & { key: string })[] => ctx.store.keys("audit/").map((key) => ({ ...ctx.store.json(key)!, key }));

describe("Pusher", () => {
  it("a fresh push uploads the object, then writes the metadata last, create-only", async () => {
    const local = ctx.docker.addImage(REF);
    const result = await new Pusher(ctx).push(REF);
    expect(formatLocalMonth(ctx.clock.now())).toBe(MONTH);
    expect(result).toMatchObject({ image_ref: REF, s3_key: KEY, skipped: false, archived: false, image_id: local.id });

    // The claim on the name first (create-only), then the object, then the metadata, create-only, last.
    const ops = ctx.store.operations.filter((o) => o.op === "upload" || o.op === "putText" || o.op === "delete");
    const claim = ".s3dock/push-claims/shop/shop-20250721-2118-f7a5a27.json";
    expect(ops[0]).toEqual({ op: "putText", key: claim, condition: { ifNoneMatch: true } });
    expect(ops[1]).toEqual({ op: "upload", key: KEY });
    expect(ops[2]).toEqual({ op: "putText", key: metadataKeyFor(KEY), condition: { ifNoneMatch: true } });
    expect(ops).toContainEqual({ op: "delete", key: claim });
    expect(ctx.store.objects.has(claim)).toBe(false);
    // The image's size lets the upload raise its part size for images too large for 10,000 parts.
    expect(ctx.store.uploadOptions[0]).toMatchObject({ expectedBytes: local.size, partSizeBytes: 5 * 1024 * 1024, chunksHandedOver: true });

    const metadata = parseDocument(imageMetadataSchema, ctx.store.text(metadataKeyFor(KEY))!, "m");
    const object = ctx.store.objects.get(KEY)!;
    expect(metadata).toMatchObject({
      size: object.body.length,
      git_hash: "f7a5a27",
      git_time: "20250721-2118",
      image_tag: REF,
      app_name: "shop",
      image_id: local.id,
      layers: local.identity.diffIds,
      object_etag: object.etag,
      pushed_by: "alice",
    });
    expect(metadata.checksum).toBe((await import("node:crypto")).createHash("md5").update(object.body).digest("hex"));
    expect(result.checksum).toBe(metadata.checksum);
    expect(isRfc3339(metadata.created_at)).toBe(true);
    expect(ctx.store.text(metadataKeyFor(KEY))).toMatch(/^\{\n {2}"checksum"/);

    // The object is the saved tar with every mtime set to the commit time.
    const entries = await readTar(gunzipSync(object.body));
    expect(entries.map((e) => e.header.name)).toContain("manifest.json");
    for (const entry of entries) expect(entry.header.mtime?.toISOString()).toBe("2025-07-21T21:18:00.000Z");

    const events = auditEvents();
    expect(events).toHaveLength(1);
    expect(events[0]!.key).toMatch(/^audit\/shop\/202507\/20250722-0901-push-f7a5a27-.+\.json$/);
    expect(events[0]).toMatchObject({ event_type: "push", user: "alice", app_name: "shop", details: { image_reference: REF, s3_path: KEY, size: object.body.length } });
    expect((events[0]!.details as Record<string, unknown>).was_skipped).toBeUndefined();
  });

  it("skips the same image (same ID) without exporting it again", async () => {
    await push(REF);
    expect(ctx.docker.saveCalls).toBe(1);
    const before = ctx.store.objects.get(KEY)!.etag;
    ctx.clock.advance(60_000);
    const again = await new Pusher(ctx).push(REF);
    expect(again).toMatchObject({ skipped: true, archived: false, s3_key: KEY });
    expect(ctx.docker.saveCalls).toBe(1);
    expect(ctx.store.objects.get(KEY)!.etag).toBe(before);
    expect(ctx.store.count("upload")).toBe(1);
    const skippedEvent = auditEvents().find((e) => (e.details as Record<string, unknown>).was_skipped === true);
    expect(skippedEvent).toBeDefined();
  });

  it("finds an image pushed in an earlier month", async () => {
    await push(REF);
    ctx.clock.current = new Date(2025, 8, 15, 12, 0);
    const again = await new Pusher(ctx).push(REF);
    expect(again).toMatchObject({ skipped: true, s3_key: KEY });
    expect(ctx.store.keys("images/shop/202509/")).toEqual([]);
  });

  it("refuses different content under a stored name, and changes nothing", async () => {
    await push(REF, "first build");
    const before = new Map([...ctx.store.objects].filter(([key]) => !key.startsWith("audit/")));
    ctx.docker.addImage(REF, "second build");
    await expect(new Pusher(ctx).push(REF)).rejects.toThrow(/already stored with different content.*push --force/);
    expect(new Map([...ctx.store.objects].filter(([key]) => !key.startsWith("audit/")))).toEqual(before);
    expect(ctx.store.count("upload")).toBe(1);
  });

  it("--force stores the new content first, then archives the old pair (unique key, create-only) and replaces it", async () => {
    const first = await push(REF, "first build");
    const oldMetadata = ctx.store.text(metadataKeyFor(KEY))!;
    const oldObject = ctx.store.objects.get(KEY)!.body;
    await new Tagger(ctx).tag(REF, "v1.0.0");
    await new Promoter(ctx).promote({ app: "shop", version: "v1.0.0" }, "production");
    await new Promoter(ctx).promote({ image: REF }, "staging");
    ctx.docker.addImage(REF, "second build");
    ctx.clock.advance(3600_000);
    const second = await new Pusher(ctx).push(REF, { force: true });
    expect(second).toMatchObject({ archived: true, skipped: false, s3_key: KEY });
    expect(second.image_id).not.toBe(first.image_id);
    expect(second.replaced).toMatchObject({ previous_image_id: first.image_id, versions: ["v1.0.0"], environments: ["production", "staging"] });
    const archived = ctx.store.keys("archive/shop/202507/");
    expect(archived).toHaveLength(2);
    const archive = archived[0]!.replace(/\.json$/, "");
    expect(archive).toMatch(/^archive\/shop\/202507\/shop-20250721-2118-f7a5a27-archived-on-20250722-1001-u[0-9a-f]{4}$/);
    expect(second.replaced!.archive_key).toBe(`${archive}.tar.gz`);
    expect(ctx.store.objects.get(`${archive}.tar.gz`)!.body.equals(oldObject)).toBe(true);
    expect(ctx.store.text(`${archive}.json`)).toBe(oldMetadata);
    expect(ctx.store.json(metadataKeyFor(KEY))!.image_id).toBe(second.image_id);
    // The upload went to a staging key before anything was archived; the staging object is gone.
    const ops = ctx.store.operations.map((o) => `${o.op} ${o.key}`);
    const staged = ops.findIndex((o) => /^upload \.s3dock\/staging\/shop\//.test(o));
    const archivedAt = ops.findIndex((o) => o.startsWith(`copy ${KEY} -> archive/`));
    expect(staged).toBeGreaterThan(0);
    expect(archivedAt).toBeGreaterThan(staged);
    expect(ctx.store.keys(".s3dock/")).toEqual([]);
    // The metadata swap is conditional on the version that was read; the archive copies are create-only.
    expect(putTexts(metadataKeyFor(KEY)).at(-1)!.condition).toHaveProperty("ifMatch");
    expect(putTexts(`${archive}.json`)[0]!.condition).toEqual({ ifNoneMatch: true });
    expect(auditEvents().some((e) => (e.details as Record<string, unknown>).was_archived === true)).toBe(true);
  });

  it("--force whose upload fails has archived and changed nothing", async () => {
    await push(REF, "first build");
    const before = new Map([...ctx.store.objects].filter(([key]) => !key.startsWith("audit/")));
    ctx.docker.addImage(REF, "second build");
    ctx.store.upload = async () => {
      throw new RemoteError("cannot upload: injected");
    };
    await expect(new Pusher(ctx).push(REF, { force: true })).rejects.toThrow(/injected/);
    expect(new Map([...ctx.store.objects].filter(([key]) => !key.startsWith("audit/")))).toEqual(before);
    expect(ctx.store.keys("archive/")).toEqual([]);
  });

  it("another push's live claim on the name with other content refuses this push before it writes anything", async () => {
    ctx.docker.addImage(REF, "mine");
    const claim = ".s3dock/push-claims/shop/shop-20250721-2118-f7a5a27.json";
    ctx.store.put(claim, JSON.stringify({ image_tag: REF, image_id: `sha256:${"e".repeat(64)}`, claimed_by: "bob", claimed_at: "2025-07-22T09:00:00Z", write_id: "x" }));
    await expect(new Pusher(ctx).push(REF)).rejects.toThrow(/another push of .* with different content .* is under way/);
    expect(ctx.store.count("upload")).toBe(0);
    // A claim older than an hour belongs to a push that died: it is taken over.
    ctx.clock.advance(2 * 3600_000);
    expect((await new Pusher(ctx).push(REF)).skipped).toBe(false);
    expect(ctx.store.objects.has(claim)).toBe(false);
  });

  it("compares a Go-pushed image (no image_id) by content, not by compressed bytes", async () => {
    const info = ctx.docker.addImage(REF);
    const tar = await collect(await ctx.docker.saveImage(REF));
    const goObject = gzipSync(tar, { level: 6 });
    ctx.store.put(KEY, goObject);
    ctx.store.put(
      metadataKeyFor(KEY),
      JSON.stringify({ checksum: "9b2cf535f27731c974343645a3985328", size: goObject.length, created_at: "2025-07-21T21:20:03.512340117+02:00", git_hash: "f7a5a27", git_time: "20250721-2118", image_tag: REF, app_name: "shop" }, null, 2),
    );
    const result = await new Pusher(ctx).push(REF);
    expect(result.skipped).toBe(true);
    expect(ctx.store.count("upload")).toBe(0);
    expect(info.id).toMatch(/^sha256:/);
  });

  it("reads a stored archive without an image ID only up to its recorded size (no decompression bomb)", async () => {
    await push(REF);
    const metadata = ctx.store.json(metadataKeyFor(KEY))!;
    // As the Go tool stores it: nothing records what the image is, so its content is read.
    delete metadata.image_id;
    delete metadata.layers;
    ctx.store.put(metadataKeyFor(KEY), JSON.stringify({ ...metadata, uncompressed_size: 100 }));
    await expect(push(REF)).rejects.toThrow(/decompresses to more than 100 bytes: refusing to read it/);
  });

  it("uploads again when the metadata exists but the object is gone", async () => {
    await push(REF);
    await ctx.store.delete(KEY);
    const again = await new Pusher(ctx).push(REF);
    expect(again.skipped).toBe(false);
    expect(ctx.store.objects.has(KEY)).toBe(true);
    expect(ctx.store.count("upload")).toBe(2);
  });

  it("refuses an image the engine does not have, and a malformed reference", async () => {
    await expect(new Pusher(ctx).push(REF)).rejects.toThrow(NotFoundError);
    await expect(new Pusher(ctx).push("shop:latest")).rejects.toThrow(UsageError);
    expect(ctx.store.keys()).toEqual([]);
  });

  it("a concurrent push that wrote metadata first while our object stands: our metadata replaces theirs", async () => {
    ctx.docker.addImage(REF);
    const metaKey = metadataKeyFor(KEY);
    ctx.store.beforePutText = (key) => {
      if (key !== metaKey || ctx.store.objects.has(metaKey)) return;
      ctx.store.put(metaKey, JSON.stringify({ checksum: "0".repeat(32), size: 1, created_at: "2025-07-22T09:00:00Z", git_hash: "f7a5a27", git_time: "20250721-2118", image_tag: REF, app_name: "shop" }));
    };
    const result = await new Pusher(ctx).push(REF);
    expect(result.skipped).toBe(false);
    const stored = ctx.store.json(metaKey)!;
    expect(stored.object_etag).toBe(ctx.store.objects.get(KEY)!.etag);
    expect(stored.size).toBe(ctx.store.objects.get(KEY)!.body.length);
  });

  it("a concurrent push of the same image that replaced object and metadata first: ours is skipped, theirs stands", async () => {
    const local = ctx.docker.addImage(REF);
    const metaKey = metadataKeyFor(KEY);
    const theirs = JSON.stringify({ checksum: "1".repeat(32), size: 3, created_at: "2025-07-22T09:00:00Z", git_hash: "f7a5a27", git_time: "20250721-2118", image_tag: REF, app_name: "shop", image_id: local.id });
    ctx.store.beforePutText = (key) => {
      if (key !== metaKey || ctx.store.objects.has(metaKey)) return;
      ctx.store.put(KEY, "abc");
      ctx.store.put(metaKey, theirs);
    };
    const result = await new Pusher(ctx).push(REF);
    expect(result).toMatchObject({ skipped: true, checksum: "1".repeat(32), size: 3 });
    expect(ctx.store.text(metaKey)).toBe(theirs);
  });

  it("other content that appeared under the name meanwhile: this push is refused", async () => {
    ctx.docker.addImage(REF);
    const metaKey = metadataKeyFor(KEY);
    ctx.store.beforePutText = (key) => {
      if (key !== metaKey || ctx.store.objects.has(metaKey)) return;
      ctx.store.put(metaKey, JSON.stringify({ checksum: "1".repeat(32), size: 3, created_at: "2025-07-22T09:00:00Z", git_hash: "f7a5a27", git_time: "20250721-2118", image_tag: REF, app_name: "shop", image_id: `sha256:${"f".repeat(64)}` }));
    };
    await expect(new Pusher(ctx).push(REF)).rejects.toThrow(/stored other content under this name first/);
  });
});

describe("Puller", () => {
  async function pushedAndRemoved(reference = REF) {
    await push(reference);
    const id = ctx.docker.images.get(reference)!.info.id;
    await ctx.docker.removeImage(reference);
    return id;
  }

  it("downloads, verifies and loads an image by its tag", async () => {
    const id = await pushedAndRemoved();
    const result = await new Puller(ctx).pull("shop", "20250721-2118-f7a5a27");
    expect(result).toMatchObject({ image_ref: REF, source_type: "image", skipped: false });
    expect(ctx.docker.completedLoads).toBe(1);
    expect(ctx.docker.images.get(REF)?.info.id).toBe(id);
    expect(ctx.store.count("getRange", KEY)).toBeGreaterThan(0);
  });

  it("has the store probe conditional writes before downloading, so the audit event costs one request at the end", async () => {
    await pushedAndRemoved();
    ctx.store.operations.length = 0;
    await new Puller(ctx).pull("shop", "20250721-2118-f7a5a27");
    const ops = ctx.store.operations.map((operation) => operation.op);
    expect(ops.indexOf("probeConditionalWrites")).toBeGreaterThanOrEqual(0);
    expect(ops.indexOf("probeConditionalWrites")).toBeLessThan(ops.indexOf("getRange"));
  });

  it("skips when the engine already has the image, with no download", async () => {
    await push(REF);
    const result = await new Puller(ctx).pull("shop", "20250721-2118-f7a5a27");
    expect(result.skipped).toBe(true);
    expect(ctx.docker.loadCalls).toBe(0);
    expect(ctx.store.count("getRange")).toBe(0);
  });

  it("a corrupt object is an IntegrityError and the load never completes", async () => {
    await pushedAndRemoved();
    const object = ctx.store.objects.get(KEY)!;
    const corrupt = Buffer.from(object.body);
    corrupt[Math.floor(corrupt.length / 2)]! ^= 0xff;
    ctx.store.put(KEY, corrupt, object.etag);
    await expect(new Puller(ctx).pull("shop", "20250721-2118-f7a5a27")).rejects.toThrow(IntegrityError);
    expect(ctx.docker.completedLoads).toBe(0);
    expect(ctx.docker.images.has(REF)).toBe(false);
  });

  it("a valid archive with the wrong content is stopped by the checksum before the tar's end reaches the engine", async () => {
    ctx = fakeContext({ transfer: { ...fakeContext().transfer, gzipLevel: 0 } });
    await pushedAndRemoved();
    const object = ctx.store.objects.get(KEY)!;
    // Stored (level 0) gzip of a tar with one content byte changed: same length, valid gzip, valid tar.
    const tar = gunzipSync(object.body);
    const layerStart = tar.indexOf("layer of");
    tar[layerStart] = "L".charCodeAt(0);
    const forged = gzipSync(tar, { level: 0 });
    expect(forged.length).toBe(object.body.length);
    expect((await readTar(gunzipSync(forged))).length).toBeGreaterThan(0);
    ctx.store.put(KEY, forged, object.etag);
    await expect(new Puller(ctx).pull("shop", "20250721-2118-f7a5a27")).rejects.toThrow(/does not match its metadata \(sha256/);
    expect(ctx.docker.loadCalls).toBe(1);
    expect(ctx.docker.completedLoads).toBe(0);
    expect(ctx.docker.images.has(REF)).toBe(false);
  });

  it("an engine that fails without reading the archive: the pull fails with its error instead of waiting on the download", async () => {
    // Larger than what the decompressor and the download buffer between them, so an unread archive stalls the download.
    ctx.docker.addImage(REF, "large", randomBytes(24 * 1024 * 1024));
    await pushedAndRemoved();
    ctx.docker.loadImage = async () => {
      throw new RemoteError("load image: the engine refused the request");
    };
    await expect(new Puller(ctx).pull("shop", "20250721-2118-f7a5a27")).rejects.toThrow(/the engine refused the request/);
  });

  it("refuses an object whose size differs from its metadata, before downloading", async () => {
    await pushedAndRemoved();
    ctx.store.put(KEY, randomBytes(10));
    await expect(new Puller(ctx).pull("shop", "20250721-2118-f7a5a27")).rejects.toThrow(/is 10 bytes but its metadata records/);
    expect(ctx.store.count("getRange")).toBe(0);
  });

  it("verifies by MD5 when the metadata has no sha256 (a Go-pushed image)", async () => {
    await pushedAndRemoved();
    const metadata = ctx.store.json(metadataKeyFor(KEY))!;
    delete metadata.sha256;
    delete metadata.image_id;
    ctx.store.put(metadataKeyFor(KEY), JSON.stringify(metadata));
    expect((await new Puller(ctx).pull("shop", "20250721-2118-f7a5a27")).skipped).toBe(false);
    expect(ctx.docker.completedLoads).toBe(1);
  });

  it("resolves an environment, a version and an image tag", async () => {
    await push(REF);
    await push(REF2);
    await new Tagger(ctx).tag(REF, "v1.2.0");
    await new Promoter(ctx).promote({ image: REF2 }, "staging");
    await new Promoter(ctx).promote({ app: "shop", version: "1.2.0" }, "production");
    const puller = new Puller(ctx);
    expect(await puller.resolve("shop", "staging")).toMatchObject({ source: "staging", sourceType: "environment", image: { name: REF2 } });
    expect(await puller.resolve("shop", "production")).toMatchObject({ sourceType: "environment", image: { name: REF } });
    expect(await puller.resolve("shop", "v1.2.0")).toMatchObject({ source: "v1.2.0", sourceType: "tag", image: { name: REF } });
    expect(await puller.resolve("shop", "1.2.0")).toMatchObject({ sourceType: "tag", image: { name: REF } });
    expect(await puller.resolve("shop", "20250801-0930-0123abc")).toMatchObject({ sourceType: "image", image: { name: REF2 } });
    await expect(puller.resolve("shop", "v9.9.9")).rejects.toThrow(NotFoundError);
    await expect(puller.resolve("shop", "nowhere")).rejects.toThrow(NotFoundError);
    await expect(puller.resolve("Shop", "staging")).rejects.toThrow(UsageError);
    await expect(puller.resolve("shop", "bad/env")).rejects.toThrow(UsageError);
  });

  it("a pull refused after the load leaves the engine as it was: the name back on its old image, the loaded image gone", async () => {
    const id = await pushedAndRemoved();
    const old = ctx.docker.addImage(REF, "what the host had under this name");
    const metadata = ctx.store.json(metadataKeyFor(KEY))!;
    ctx.store.put(metadataKeyFor(KEY), JSON.stringify({ ...metadata, image_id: `sha256:${"0".repeat(64)}` }));
    await expect(new Puller(ctx).pull("shop", "20250721-2118-f7a5a27")).rejects.toThrow(/loaded with config .*, but its metadata records/);
    expect(ctx.docker.completedLoads).toBe(1);
    expect(ctx.docker.images.get(REF)?.info.id).toBe(old.id);
    expect(await ctx.docker.imageIds()).not.toContain(id);
  });

  it("a pull refused after the load, with no image under the name before: neither name nor image is left", async () => {
    await pushedAndRemoved();
    const metadata = ctx.store.json(metadataKeyFor(KEY))!;
    ctx.store.put(metadataKeyFor(KEY), JSON.stringify({ ...metadata, image_id: `sha256:${"0".repeat(64)}` }));
    await expect(new Puller(ctx).pull("shop", "20250721-2118-f7a5a27")).rejects.toThrow(IntegrityError);
    expect(ctx.docker.images.size).toBe(0);
  });

  it("loads the archive under the pulled name only, whatever names it carries", async () => {
    ctx = fakeContext({ transfer: { ...fakeContext().transfer, gzipLevel: 0 } });
    await pushedAndRemoved();
    const object = ctx.store.objects.get(KEY)!;
    const tar = gunzipSync(object.body);
    const manifest = tar.indexOf(`"RepoTags":["${REF}"]`);
    const hostile = Buffer.from(tar);
    // Same length: one name more, the reference shortened to fit (what a bucket writer could put there).
    hostile.write(`"RepoTags":["pg:1","shop:1"]`.padEnd(`"RepoTags":["${REF}"]`.length, " "), manifest);
    const forged = gzipSync(hostile, { level: 0 });
    const metadata = ctx.store.json(metadataKeyFor(KEY))!;
    ctx.store.put(KEY, forged);
    ctx.store.put(metadataKeyFor(KEY), JSON.stringify({ ...metadata, sha256: createHash("sha256").update(forged).digest("hex"), size: forged.length }));
    await new Puller(ctx).pull("shop", "20250721-2118-f7a5a27");
    expect([...ctx.docker.images.keys()]).toEqual([REF]);
  });

  it("stops decompressing past the metadata's uncompressed_size: nothing is loaded", async () => {
    await pushedAndRemoved();
    const metadata = ctx.store.json(metadataKeyFor(KEY))!;
    ctx.store.put(metadataKeyFor(KEY), JSON.stringify({ ...metadata, uncompressed_size: 1000 }));
    await expect(new Puller(ctx).pull("shop", "20250721-2118-f7a5a27")).rejects.toThrow(/decompresses to more than the 1000 bytes its metadata records/);
    expect(ctx.docker.completedLoads).toBe(0);
    expect(ctx.docker.images.size).toBe(0);
  });

  it("refuses an image with no recorded uncompressed size above transfer.max_image_mb_without_size", async () => {
    ctx = fakeContext({ transfer: { ...fakeContext().transfer, maxImageBytesWithoutSize: 4096 } });
    await pushedAndRemoved();
    const metadata = ctx.store.json(metadataKeyFor(KEY))!;
    delete metadata.uncompressed_size;
    ctx.store.put(metadataKeyFor(KEY), JSON.stringify(metadata));
    await expect(new Puller(ctx).pull("shop", "20250721-2118-f7a5a27")).rejects.toThrow(/metadata records no uncompressed size.*max_image_mb_without_size/);
    expect(ctx.docker.completedLoads).toBe(0);
  });

  it("an image whose metadata is missing is not found", async () => {
    await push(REF);
    await ctx.store.delete(metadataKeyFor(KEY));
    await expect(new Puller(ctx).pull("shop", "20250721-2118-f7a5a27")).rejects.toThrow(NotFoundError);
  });
});

describe("Tagger", () => {
  it("writes a create-only tag pointing at the image, and audits it", async () => {
    await push(REF);
    const result = await new Tagger(ctx).tag(REF, "1.2.0");
    expect(result).toMatchObject({ version: "v1.2.0", s3_key: "tags/shop/v1.2.0.json", skipped: false, replaced: undefined });
    expect(ctx.store.json("tags/shop/v1.2.0.json")).toMatchObject({ target_type: "image", target_path: KEY, source_image: REF, promoted_by: "alice", git_hash: "f7a5a27" });
    expect(putTexts("tags/shop/v1.2.0.json")[0]!.condition).toEqual({ ifNoneMatch: true });
    expect(auditEvents().find((e) => e.event_type === "tag")?.details).toMatchObject({ image_reference: REF, version: "v1.2.0", tag_path: "tags/shop/v1.2.0.json" });
  });

  it("tagging the same image again is a no-op", async () => {
    await push(REF);
    await new Tagger(ctx).tag(REF, "v1.2.0");
    const again = await new Tagger(ctx).tag(REF, "v1.2.0");
    expect(again.skipped).toBe(true);
    expect(putTexts("tags/shop/v1.2.0.json")).toHaveLength(1);
  });

  it("versions are immutable: another image under the same version is a ConflictError", async () => {
    await push(REF);
    await push(REF2);
    await new Tagger(ctx).tag(REF, "v1.2.0");
    await expect(new Tagger(ctx).tag(REF2, "v1.2.0")).rejects.toThrow(ConflictError);
    expect(ctx.store.json("tags/shop/v1.2.0.json")!.target_path).toBe(KEY);
  });

  it("--force archives the old tag and replaces it", async () => {
    await push(REF);
    await push(REF2);
    await new Tagger(ctx).tag(REF, "v1.2.0");
    const oldTag = ctx.store.text("tags/shop/v1.2.0.json");
    const result = await new Tagger(ctx).tag(REF2, "v1.2.0", { force: true });
    expect(result).toMatchObject({ replaced: REF, skipped: false });
    const archived = ctx.store.keys("archive/shop/tags/");
    expect(archived).toEqual([expect.stringMatching(/^archive\/shop\/tags\/v1\.2\.0-archived-on-20250722-0901-u[0-9a-f]{4}\.json$/)]);
    expect(ctx.store.text(archived[0]!)).toBe(oldTag);
    // Archived only once the new tag stands, create-only.
    const ops = ctx.store.operations.map((o) => `${o.op} ${o.key}`);
    expect(ops.indexOf(`putText ${archived[0]}`)).toBeGreaterThan(ops.lastIndexOf("putText tags/shop/v1.2.0.json"));
    expect(putTexts(archived[0]!)[0]!.condition).toEqual({ ifNoneMatch: true });
    expect(ctx.store.json("tags/shop/v1.2.0.json")!.target_path).toBe(KEY2);
    expect(putTexts("tags/shop/v1.2.0.json").at(-1)!.condition).toHaveProperty("ifMatch");
  });

  it("finds a tag another tool wrote without the v", async () => {
    await push(REF);
    ctx.store.put("tags/shop/1.2.0.json", JSON.stringify({ target_type: "image", target_path: KEY, promoted_at: "2025-07-22T09:01:44Z", promoted_by: "bob", git_hash: "f7a5a27", git_time: "20250721-2118", source_image: REF }));
    const result = await new Tagger(ctx).tag(REF, "v1.2.0");
    expect(result).toMatchObject({ skipped: true, version: "1.2.0", s3_key: "tags/shop/1.2.0.json" });
    expect(ctx.store.objects.has("tags/shop/v1.2.0.json")).toBe(false);
  });

  it("refuses an image that is not stored, and a bad version", async () => {
    await expect(new Tagger(ctx).tag(REF, "v1.0.0")).rejects.toThrow(NotFoundError);
    await push(REF);
    await expect(new Tagger(ctx).tag(REF, "latest")).rejects.toThrow(UsageError);
  });
});

describe("Promoter", () => {
  const POINTER = "pointers/shop/production.json";

  it("points an environment at an image, create-only the first time", async () => {
    await push(REF);
    const result = await new Promoter(ctx).promote({ image: REF }, "production");
    expect(result).toMatchObject({ source: REF, environment: "production", source_type: "image", image_ref: REF, skipped: false, previous_target: undefined, attempts: 1 });
    expect(ctx.store.json(POINTER)).toMatchObject({ target_type: "image", target_path: KEY, source_image: REF });
    expect(putTexts(POINTER)[0]!.condition).toEqual({ ifNoneMatch: true });
    const event = auditEvents().find((e) => e.event_type === "promotion")!;
    expect(event.details).toEqual({ environment: "production", source: REF, source_type: "image", pointer_path: POINTER });
  });

  it("skips an unchanged promotion: no write, no audit", async () => {
    await push(REF);
    await new Promoter(ctx).promote({ image: REF }, "production");
    const events = auditEvents().length;
    const again = await new Promoter(ctx).promote({ image: REF }, "production");
    expect(again.skipped).toBe(true);
    expect(putTexts(POINTER)).toHaveLength(1);
    expect(auditEvents()).toHaveLength(events);
  });

  it("records the previous target and swaps with If-Match", async () => {
    await push(REF);
    await push(REF2);
    await new Promoter(ctx).promote({ image: REF }, "production");
    const result = await new Promoter(ctx).promote({ image: REF2 }, "production");
    expect(result.previous_target).toBe(KEY);
    expect(putTexts(POINTER).at(-1)!.condition).toHaveProperty("ifMatch");
    const last = auditEvents().filter((e) => e.event_type === "promotion").find((e) => (e.details as Record<string, unknown>).previous_target === KEY);
    expect(last).toBeDefined();
  });

  it("promotes from a version tag", async () => {
    await push(REF);
    await new Tagger(ctx).tag(REF, "v1.2.0");
    const result = await new Promoter(ctx).promote({ app: "shop", version: "1.2.0" }, "production");
    expect(result).toMatchObject({ source: "shop:v1.2.0", source_type: "tag", image_ref: REF });
    expect(ctx.store.json(POINTER)).toMatchObject({ target_type: "tag", target_path: "tags/shop/v1.2.0.json", source_tag: "v1.2.0", source_image: REF });
  });

  function concurrentPromoteOf(reference: string, times: number) {
    let remaining = times;
    ctx.store.beforePutText = async (key) => {
      if (key !== POINTER || remaining === 0) return;
      remaining--;
      ctx.store.beforePutText = undefined;
      await new Promoter(ctx).promote({ image: reference }, "production");
      concurrentPromoteOf(reference === REF ? REF2 : REF, remaining);
    };
  }

  it("a concurrent promote between read and write is a ConflictError and nothing of ours is written", async () => {
    await push(REF);
    await push(REF2);
    await new Promoter(ctx).promote({ image: REF }, "staging-x");
    concurrentPromoteOf(REF2, 1);
    await expect(new Promoter(ctx).promote({ image: REF }, "production")).rejects.toThrow(ConflictError);
    expect(ctx.store.json(POINTER)!.target_path).toBe(KEY2);
  });

  it("--retries re-reads and wins, recording the predecessor it really replaced", async () => {
    await push(REF);
    await push(REF2);
    await new Promoter(ctx).promote({ image: REF2 }, "production");
    // Someone promotes REF2 → nothing to change for them; make the concurrent write a real change instead.
    ctx.store.put(POINTER, ctx.store.text(POINTER)!.replace('"promoted_by": "alice"', '"promoted_by": "bob"'));
    let raced = false;
    ctx.store.beforePutText = (key) => {
      if (key !== POINTER || raced) return;
      raced = true;
      ctx.store.put(POINTER, ctx.store.text(POINTER)!.replace('"promoted_by": "bob"', '"promoted_by": "carol"'));
    };
    const result = await new Promoter(ctx).promote({ image: REF }, "production", { retries: 2 });
    expect(result).toMatchObject({ skipped: false, attempts: 2, previous_target: KEY2 });
    expect(ctx.store.json(POINTER)!.target_path).toBe(KEY);
  });

  it("gives up after the retries", async () => {
    await push(REF);
    await push(REF2);
    await new Promoter(ctx).promote({ image: REF2 }, "production");
    let n = 0;
    ctx.store.beforePutText = (key) => {
      if (key === POINTER) ctx.store.put(POINTER, ctx.store.text(POINTER)!.replace(/"promoted_by": "[^"]*"/, `"promoted_by": "u${n++}"`));
    };
    await expect(new Promoter(ctx).promote({ image: REF }, "production", { retries: 2 })).rejects.toThrow(/promoted by someone else/);
    expect(n).toBe(3);
  });

  it("refuses unknown images and tags, and bad environment names", async () => {
    await expect(new Promoter(ctx).promote({ image: REF }, "production")).rejects.toThrow(NotFoundError);
    await expect(new Promoter(ctx).promote({ app: "shop", version: "v1.0.0" }, "production")).rejects.toThrow(NotFoundError);
    await expect(new Promoter(ctx).promote({ image: REF }, "../prod")).rejects.toThrow(UsageError);
  });
});

describe("Lister", () => {
  beforeEach(async () => {
    await push(REF);
    await push(REF2);
    await push("shop-admin:20250705-1000-aaaaaaa");
    ctx.clock.current = new Date(2025, 7, 2, 10, 0);
    await push("shop:20250802-0800-bbbbbbb");
  });

  it("lists apps as the union of images/, tags/ and pointers/", async () => {
    ctx.store.put("tags/tagonly/v1.0.0.json", "{}");
    ctx.store.put("pointers/pointeronly/prod.json", "{}");
    expect(await new Lister(ctx).apps()).toEqual(["pointeronly", "shop", "shop-admin", "tagonly"]);
  });

  it("lists an app's images newest first, never a dashed sibling's, and only complete pairs", async () => {
    ctx.store.put(imageKey(parseImageRef("shop:20250901-0000-ccccccc"), "202509"), "orphan object without metadata");
    const images = await new Lister(ctx).images("shop");
    expect(images.map((i) => i.tag)).toEqual(["20250802-0800-bbbbbbb", "20250801-0930-0123abc", "20250721-2118-f7a5a27"]);
    expect(images[0]).toEqual({ app_name: "shop", tag: "20250802-0800-bbbbbbb", s3_path: "images/shop/202508/shop-20250802-0800-bbbbbbb.tar.gz", year_month: "202508" });
    expect((await new Lister(ctx).images("shop", "202507")).map((i) => i.tag)).toEqual(["20250801-0930-0123abc", "20250721-2118-f7a5a27"]);
    expect((await new Lister(ctx).images("shop-admin")).map((i) => i.tag)).toEqual(["20250705-1000-aaaaaaa"]);
    expect(await new Lister(ctx).images("nothing")).toEqual([]);
  });

  it("lists tags by semver, newest first (v1.10.0 before v1.9.0)", async () => {
    for (const version of ["v1.9.0", "v1.10.0", "v1.2.0", "v2.0.0-rc.1"]) {
      await new Tagger(ctx).tag(version === "v1.10.0" ? REF2 : REF, version);
    }
    const tags = await new Lister(ctx).tags("shop");
    expect(tags.map((t) => t.version)).toEqual(["v2.0.0-rc.1", "v1.10.0", "v1.9.0", "v1.2.0"]);
    expect(tags[1]).toEqual({ app_name: "shop", version: "v1.10.0", target_image: REF2, s3_path: "tags/shop/v1.10.0.json" });
  });

  it("lists environments ascending, with the tag they came through", async () => {
    await new Tagger(ctx).tag(REF, "v1.0.0");
    await new Promoter(ctx).promote({ image: REF2 }, "staging");
    await new Promoter(ctx).promote({ app: "shop", version: "v1.0.0" }, "production");
    await new Promoter(ctx).promote({ image: REF }, "dev");
    const envs = await new Lister(ctx).envs("shop");
    expect(envs.map((e) => e.environment)).toEqual(["dev", "production", "staging"]);
    expect(envs[1]).toEqual({ app_name: "shop", environment: "production", target_type: "tag", target_path: "tags/shop/v1.0.0.json", source_tag: "v1.0.0", source_image: REF });
    expect(envs[2]).not.toHaveProperty("source_tag");
  });

  it("tag-for gives the version or undefined; current resolves the image", async () => {
    await new Tagger(ctx).tag(REF, "v1.0.0");
    await new Promoter(ctx).promote({ app: "shop", version: "v1.0.0" }, "production");
    await new Promoter(ctx).promote({ image: REF2 }, "staging");
    const lister = new Lister(ctx);
    expect(await lister.tagFor("shop", "production")).toBe("v1.0.0");
    expect(await lister.tagFor("shop", "staging")).toBeUndefined();
    await expect(lister.tagFor("shop", "qa")).rejects.toThrow(NotFoundError);
    expect(await lister.current("shop", "production")).toEqual({ app_name: "shop", environment: "production", image_ref: REF, source_tag: "v1.0.0", s3_path: KEY });
    expect(await lister.current("shop", "staging")).toEqual({ app_name: "shop", environment: "staging", image_ref: REF2, s3_path: KEY2 });
  });

  it("current works for a dashed app (the Go tool's bug)", async () => {
    await new Promoter(ctx).promote({ image: "shop-admin:20250705-1000-aaaaaaa" }, "production");
    expect((await new Lister(ctx).current("shop-admin", "production")).image_ref).toBe("shop-admin:20250705-1000-aaaaaaa");
    expect(parseImageKey((await new Lister(ctx).current("shop-admin", "production")).s3_path)?.app).toBe("shop-admin");
  });
});

describe("AuditLog", () => {
  const subject = { app: "shop", gitHash: "f7a5a27", gitTime: "20250721-2118" };

  it("gives same-minute events of the same kind distinct keys, so none is lost", async () => {
    const log = new AuditLog(ctx);
    const keys = await Promise.all([1, 2, 3].map((n) => log.record("push", subject, { n })));
    expect(new Set(keys).size).toBe(3);
    expect(ctx.store.keys("audit/")).toHaveLength(3);
    for (const key of keys) expect(key).toMatch(/^audit\/shop\/202507\/20250722-0901-push-f7a5a27-.+\.json$/);
    expect(putTexts(keys[0]!)[0]!.condition).toEqual({ ifNoneMatch: true });
  });

  it("writes the Go event shape", async () => {
    const key = await new AuditLog(ctx).record("tag", subject, { version: "v1.0.0" });
    const event = ctx.store.json(key!)!;
    expect(event).toMatchObject({ event_type: "tag", user: "alice", app_name: "shop", git_hash: "f7a5a27", git_time: "20250721-2118", details: { version: "v1.0.0" } });
    expect(isRfc3339(event.timestamp as string)).toBe(true);
    expect(Date.parse(event.timestamp as string)).toBe(ctx.clock.now().getTime());
  });

  it("a failed write is a warning, not an error", async () => {
    ctx.store.beforePutText = () => {
      throw new Error("bucket is read-only");
    };
    expect(await new AuditLog(ctx).record("push", subject, {})).toBeUndefined();
  });
});
