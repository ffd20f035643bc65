/**
 * In-memory stand-ins for the clients the services use: an object store with S3's semantics
 * (ETags, conditional writes, prefixes, ranges), a Docker engine whose save/load speak real tar
 * archives, and a clock that only moves when told.
 */
import { createHash } from "node:crypto";
import type { Readable } from "node:stream";
import pino from "pino";
import type { DockerEngine, ImageInfo, LocalLayers } from "../../src/clients/docker.js";
import { chainIds } from "../../src/domain/oci.js";
import type { PooledChunk } from "../../src/transfer/buffer-pool.js";
import type { ObjectInfo, ObjectStore, PendingUpload, RangeOptions, StoredText, UploadOptions, WriteCondition } from "../../src/clients/object-store.js";
import { MAX_DOCUMENT_BYTES } from "../../src/domain/documents.js";
import { ConflictError, IntegrityError, NotFoundError, RemoteError } from "../../src/errors.js";
import type { Clock, ServiceContext } from "../../src/services/context.js";
import { silentProgress } from "../../src/services/context.js";
import { collect, makeTar, readTar } from "./tar-helpers.js";

interface StoredObject {
  readonly body: Buffer;
  readonly etag: string;
  readonly lastModified: Date;
}

const md5 = (data: Buffer | string): string => createHash("md5").update(data).digest("hex");
const sha256 = (data: Buffer | string): string => createHash("sha256").update(data).digest("hex");

export type StoreOperation =
  | { readonly op: "putText"; readonly key: string; readonly condition: WriteCondition | undefined }
  | { readonly op: "upload" | "copy" | "delete" | "getRange" | "getStream" | "getText" | "head"; readonly key: string }
  | { readonly op: "probeConditionalWrites"; readonly key: "" };

export class FakeObjectStore implements ObjectStore {
  readonly bucket: string;
  readonly objects = new Map<string, StoredObject>();
  readonly operations: StoreOperation[] = [];
  /** The options of each upload, in order. */
  readonly uploadOptions: UploadOptions[] = [];
  /** Runs before a putText is applied: lets a test slip in a concurrent writer. */
  beforePutText: ((key: string) => void | Promise<void>) | undefined;
  /** Runs before each getRange; throw from it to fail that attempt. */
  beforeGetRange: ((key: string, start: number, end: number) => void | Promise<void>) | undefined;
  /** Items listed per page by list(), to exercise pagination. */
  pageSize = 2;
  private versions = 0;

  constructor(bucket = "test-bucket") {
    this.bucket = bucket;
  }

  url(key: string): string {
    return `s3://${this.bucket}/${key}`;
  }

  /** Writes an object directly, as another tool would. */
  put(key: string, body: Buffer | string, etag?: string): string {
    const bytes = Buffer.from(body);
    const stored = { body: bytes, etag: etag ?? `"${md5(bytes)}"`, lastModified: new Date(Date.UTC(2025, 0, 1) + this.versions++ * 1000) };
    this.objects.set(key, stored);
    return stored.etag;
  }

  text(key: string): string | undefined {
    return this.objects.get(key)?.body.toString("utf8");
  }

  json(key: string): Record<string, unknown> | undefined {
    const text = this.text(key);
    return text === undefined ? undefined : (JSON.parse(text) as Record<string, unknown>);
  }

  keys(prefix = ""): string[] {
    return [...this.objects.keys()].filter((key) => key.startsWith(prefix)).sort();
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    this.operations.push({ op: "head", key });
    const object = this.objects.get(key);
    return object && { key, size: object.body.length, etag: object.etag, lastModified: object.lastModified };
  }

  async getText(key: string): Promise<StoredText | undefined> {
    this.operations.push({ op: "getText", key });
    const object = this.objects.get(key);
    if (object && object.body.length > MAX_DOCUMENT_BYTES) throw new IntegrityError(`${this.url(key)} is ${object.body.length} bytes, more than any s3dock document`);
    return object && { text: object.body.toString("utf8"), etag: object.etag };
  }

  async putText(key: string, text: string, condition?: WriteCondition): Promise<{ etag: string }> {
    await this.beforePutText?.(key);
    this.operations.push({ op: "putText", key, condition });
    const current = this.objects.get(key);
    if (condition && "ifNoneMatch" in condition && current) throw new ConflictError(`${this.url(key)} was changed by someone else (it already exists)`);
    if (condition && "ifMatch" in condition && current?.etag !== condition.ifMatch) {
      throw new ConflictError(`${this.url(key)} was changed by someone else (it is no longer the version read)`);
    }
    return { etag: this.put(key, text) };
  }

  async upload(key: string, body: Readable, options: UploadOptions): Promise<{ etag: string }> {
    this.operations.push({ op: "upload", key });
    this.uploadOptions.push(options);
    const bytes = await collect(body);
    // A multipart upload's ETag is not the MD5 of the object.
    return { etag: this.put(key, bytes, `"${md5(`${md5(bytes)}${this.versions}`)}-1"`) };
  }

  async getRange(key: string, start: number, endInclusive: number, options: RangeOptions): Promise<Buffer> {
    this.operations.push({ op: "getRange", key });
    options.signal?.throwIfAborted();
    await this.beforeGetRange?.(key, start, endInclusive);
    const object = this.objects.get(key);
    if (!object) throw new NotFoundError(`${this.url(key)} does not exist`);
    if (start >= object.body.length) throw new RemoteError(`${this.url(key)}: range not satisfiable`);
    return options.into.subarray(0, object.body.subarray(start, endInclusive + 1).copy(options.into));
  }

  async getStream(key: string): Promise<Readable> {
    this.operations.push({ op: "getStream", key });
    const object = this.objects.get(key);
    if (!object) throw new NotFoundError(`${this.url(key)} does not exist`);
    const { Readable } = await import("node:stream");
    return Readable.from([object.body]);
  }

  async copy(sourceKey: string, destinationKey: string): Promise<void> {
    this.operations.push({ op: "copy", key: `${sourceKey} -> ${destinationKey}` });
    const object = this.objects.get(sourceKey);
    if (!object) throw new NotFoundError(`${this.url(sourceKey)} does not exist`);
    this.put(destinationKey, object.body, object.etag);
  }

  async delete(key: string): Promise<void> {
    this.operations.push({ op: "delete", key });
    this.objects.delete(key);
  }

  /** Keys in lexicographic order, served page by page as ListObjectsV2 does. */
  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const keys = this.keys(prefix);
    for (let page = 0; page < keys.length; page += this.pageSize) {
      await Promise.resolve();
      for (const key of keys.slice(page, page + this.pageSize)) {
        const object = this.objects.get(key);
        if (object) yield { key, size: object.body.length, etag: object.etag, lastModified: object.lastModified };
      }
    }
  }

  async listPrefixes(prefix: string): Promise<string[]> {
    const prefixes = new Set<string>();
    for (const key of this.keys(prefix)) {
      const slash = key.indexOf("/", prefix.length);
      if (slash >= 0) prefixes.add(key.slice(0, slash + 1));
    }
    return [...prefixes].sort();
  }

  async listPendingUploads(): Promise<PendingUpload[]> {
    return [];
  }

  async abortUpload(): Promise<void> {}

  async conditionalWritesHonoured(): Promise<boolean> {
    this.operations.push({ op: "probeConditionalWrites", key: "" });
    return true;
  }

  /** The server's clock: the context's fake clock (fakeContext sets it), so ages agree with it. */
  clock: Clock | undefined;

  serverNow(): Date {
    return this.clock?.now() ?? new Date();
  }

  count(op: StoreOperation["op"], key?: string): number {
    return this.operations.filter((o) => o.op === op && (key === undefined || o.key === key)).length;
  }
}

interface FakeImage {
  readonly info: ImageInfo;
  readonly config: Buffer;
  readonly layer: Buffer;
}

/** A Docker engine holding images in a map; save and load produce and consume real `docker save` tars. */
export class FakeDockerEngine implements DockerEngine {
  readonly address = "unix:///fake/docker.sock";
  readonly images = new Map<string, FakeImage>();
  saveCalls = 0;
  loadCalls = 0;
  /** Tars whose load ran to the end and registered images. */
  completedLoads = 0;

  /** Adds an image whose content (and so its ID) is derived from `content`. */
  addImage(reference: string, content = reference, layerBytes?: Buffer): ImageInfo {
    const layer = layerBytes ?? Buffer.from(`layer of ${content}\n`.repeat(200));
    const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [`sha256:${sha256(layer)}`] }, content }));
    const info: ImageInfo = {
      id: `sha256:${sha256(config)}`,
      identity: { configDigest: `sha256:${sha256(config)}`, diffIds: [`sha256:${sha256(layer)}`] },
      repoTags: [reference],
      labels: {},
      size: layer.length + config.length,
      hasHealthcheck: false,
    };
    this.images.set(reference, { info, config, layer });
    return info;
  }

  async inspectImage(reference: string): Promise<ImageInfo | undefined> {
    return this.images.get(reference)?.info;
  }

  async saveImage(reference: string): Promise<Readable> {
    this.saveCalls++;
    const image = this.images.get(reference);
    if (!image) throw new NotFoundError(`image ${reference} not found`);
    const hex = image.info.id.slice("sha256:".length);
    const layerDir = sha256(image.layer);
    const manifest = [{ Config: `${hex}.json`, RepoTags: [reference], Layers: [`${layerDir}/layer.tar`] }];
    const mtime = new Date(Date.UTC(2024, 0, 2, 3, 4, 5));
    const tarBytes = await makeTar([
      { header: { name: `${layerDir}/`, type: "directory", mtime } },
      { header: { name: `${layerDir}/layer.tar`, mtime }, body: image.layer },
      { header: { name: `${hex}.json`, mtime }, body: image.config },
      { header: { name: "manifest.json", mtime }, body: JSON.stringify(manifest) },
    ]);
    const { Readable } = await import("node:stream");
    return Readable.from([tarBytes]);
  }

  /** Like the real adapter: copies and releases each chunk as it arrives; a failing archive rejects with its own error. */
  async loadImage(archive: AsyncIterable<PooledChunk>): Promise<string[]> {
    this.loadCalls++;
    const received: Buffer[] = [];
    for await (const chunk of archive) {
      received.push(Buffer.from(chunk.data));
      chunk.release();
    }
    const entries = await readTar(Buffer.concat(received));
    const manifestEntry = entries.find((entry) => entry.header.name === "manifest.json");
    if (!manifestEntry) throw new RemoteError("the Docker engine reported: no manifest.json in the archive");
    const manifest = JSON.parse(manifestEntry.body.toString("utf8")) as { Config: string; RepoTags: string[]; Layers: string[] }[];
    const names: string[] = [];
    for (const item of manifest) {
      const config = entries.find((entry) => entry.header.name === item.Config)?.body;
      const layer = entries.find((entry) => entry.header.name === item.Layers[0])?.body;
      if (!config || !layer) throw new RemoteError("the Docker engine reported: archive is missing files");
      for (const tag of item.RepoTags) {
        const info: ImageInfo = {
          id: `sha256:${sha256(config)}`,
          identity: { configDigest: `sha256:${sha256(config)}`, diffIds: [`sha256:${sha256(layer)}`] },
          repoTags: item.RepoTags,
          labels: {},
          size: config.length + layer.length,
          hasHealthcheck: false,
        };
        // The image the name leaves stays in the engine, unnamed (by its ID), as Docker keeps it.
        const replaced = this.images.get(tag);
        const stillNamed = replaced && [...this.images].some(([name, other]) => name !== tag && other.info.id === replaced.info.id);
        if (replaced && replaced.info.id !== info.id && !stillNamed) this.images.set(replaced.info.id, replaced);
        this.images.set(tag, { info, config, layer });
        names.push(tag);
      }
    }
    this.completedLoads++;
    return names;
  }

  async buildImage(): Promise<void> {
    throw new Error("FakeDockerEngine.buildImage is not used by these tests");
  }

  async listImageTags(repository: string): Promise<{ tag: string; id: string; created: Date }[]> {
    return [...this.images.entries()]
      .filter(([reference]) => reference.startsWith(`${repository}:`))
      .map(([tag, image]) => ({ tag, id: image.info.id, created: new Date(0) }));
  }

  /** By name, or by ID (every name of that image). */
  async removeImage(reference: string): Promise<void> {
    for (const [name, image] of this.images) if (name === reference || image.info.id === reference) this.images.delete(name);
  }

  async tagImage(id: string, reference: string): Promise<void> {
    const image = [...this.images.values()].find((candidate) => candidate.info.id === id);
    if (!image) throw new NotFoundError(`no image ${id}`);
    this.images.set(reference, image);
  }

  async imageIds(): Promise<Set<string>> {
    return new Set([...this.images.values()].map((image) => image.info.id));
  }

  async imageIdsInUse(): Promise<Set<string>> {
    return new Set();
  }

  async imageStore(): Promise<"graphdriver"> {
    return "graphdriver";
  }

  async localLayers(): Promise<LocalLayers> {
    const chains = [...this.images.values()].flatMap((image) => chainIds(image.info.identity.diffIds));
    return { chainIds: new Set(chains), manifestDigests: new Set() };
  }
}

export class FixedClock implements Clock {
  constructor(public current: Date = new Date(2025, 6, 22, 9, 1, 44, 120)) {}

  now(): Date {
    return new Date(this.current);
  }

  advance(ms: number): void {
    this.current = new Date(this.current.getTime() + ms);
  }
}

export interface FakeContext extends ServiceContext {
  readonly store: FakeObjectStore;
  readonly docker: FakeDockerEngine;
  readonly clock: FixedClock;
}

export function fakeContext(overrides: Partial<FakeContext> = {}): FakeContext {
  let unique = 0;
  const context: FakeContext = {
    store: new FakeObjectStore(),
    docker: new FakeDockerEngine(),
    logger: pino({ level: "silent" }),
    clock: new FixedClock(),
    user: "alice",
    transfer: { partSizeBytes: 5 * 1024 * 1024, concurrency: 2, chunkSizeBytes: 64 * 1024, compressionWorkers: 2, gzipLevel: 1, maxImageBytesWithoutSize: 64 * 1024 * 1024 },
    storageFormat: "archive",
    retryCount: 2,
    progress: silentProgress,
    toolVersion: "s3dock/test",
    uniqueId: () => `u${(unique++).toString(16).padStart(4, "0")}`,
    ...overrides,
  };
  context.store.clock ??= context.clock;
  return context;
}
