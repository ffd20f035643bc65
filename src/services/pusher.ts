/**
 * push: docker save → tar times set to the commit time → gzip on all cores → digests → multipart
 * upload, as one stream, then the metadata document last, which is what makes the image visible.
 */
import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import { ConflictError, NotFoundError, S3dockError } from "../errors.js";
import { serializeDocument, type ImageMetadata } from "../domain/documents.js";
import { archivedImageKey, imageKey, metadataKeyFor } from "../domain/keys.js";
import { formatImageRef, parseImageRef } from "../domain/names.js";
import { sameImage, storedIdentity } from "../domain/image-identity.js";
import { formatGoTime, formatLocalMonth, formatLocalStamp, gitTimeToDate } from "../domain/time.js";
import type { ImageInfo } from "../clients/docker.js";
import { configDigestOfManifest, identityFromArchive } from "../transfer/archive-manifest.js";
import { collectionPacer, type GarbageCollector } from "../transfer/collection-pacer.js";
import { DigestTap } from "../transfer/digest.js";
import { sha256Digest } from "../domain/oci.js";
import type { StorageFormat } from "../domain/config.js";
import { BlobStore } from "../storage/blob-store.js";
import { goStandIn, LayerLayout } from "../storage/layer-layout.js";
import { LayerGuessMissed, pushLayers, type LayerPushResult } from "../transfer/layer-push.js";
import { parallelGzip } from "../transfer/parallel-gzip.js";
import { rewriteTarTimes } from "../transfer/tar-times.js";
import { AuditLog } from "./audit.js";
import { ImageCatalog, type StoredImage } from "./catalog.js";
import type { ServiceContext } from "./context.js";

/** How much of the export passes between the full collections that free its spent socket buffers. */
const COLLECTION_INTERVAL_BYTES = 16 * 1024 * 1024;

export interface PushOptions {
  /** How to store the image: "layers" (default) or "archive" (one Go-compatible .tar.gz). */
  readonly format?: StorageFormat;
}

export interface PushResult {
  readonly image_ref: string;
  readonly s3_key: string;
  readonly checksum: string;
  readonly size: number;
  readonly skipped: boolean;
  readonly archived: boolean;
  readonly sha256: string | undefined;
  readonly image_id: string;
  readonly format: StorageFormat;
  /** Bytes this push added to the bucket (new layer blobs, or the whole archive). */
  readonly bytes_uploaded: number;
  readonly layers_uploaded: number;
  readonly layers_reused: number;
  readonly duration_ms: number;
}

interface Uploaded {
  readonly metadata: ImageMetadata;
  readonly uploaded: { readonly bytes: number; readonly layers: number; readonly reused: number };
}

const NOTHING_UPLOADED: Uploaded["uploaded"] = { bytes: 0, layers: 0, reused: 0 };

export class Pusher {
  private readonly catalog: ImageCatalog;
  private readonly audit: AuditLog;

  constructor(private readonly ctx: ServiceContext) {
    this.catalog = new ImageCatalog(ctx.store);
    this.audit = new AuditLog(ctx);
  }

  async push(reference: string, options: PushOptions = {}): Promise<PushResult> {
    const format = options.format ?? this.ctx.storageFormat;
    const started = Date.now();
    const ref = parseImageRef(reference);
    const name = formatImageRef(ref);
    const { docker, store, logger } = this.ctx;
    const local = await docker.inspectImage(name);
    if (!local) throw new NotFoundError(`image ${name} is not in the Docker engine at ${docker.address} (build it first: s3dock build ${ref.app})`);

    const existing = await this.catalog.find(ref);
    let archived = false;
    if (existing) {
      if (await this.storesSameImage(existing, local)) {
        if (await this.objectIntact(existing)) {
          logger.info(`${name} is already stored at ${store.url(existing.key)}: skipped`);
          return this.finish(name, existing.key, existing.metadata, { skipped: true, archived: false, uploaded: NOTHING_UPLOADED }, started);
        }
        logger.warn(`${store.url(existing.key)} is missing or does not match its metadata: uploading it again`);
      } else {
        await this.archive(existing);
        archived = true;
      }
    }

    const key = existing?.key ?? imageKey(ref, formatLocalMonth(this.ctx.clock.now()));
    const { metadata, uploaded } =
      format === "layers" ? await this.uploadLayers(name, key, local) : await this.upload(name, key, local, gitTimeToDate(ref.gitTime));
    const documentKey = metadataKeyFor(key);
    const condition = existing ? { ifMatch: existing.metadataEtag } : ({ ifNoneMatch: true } as const);
    try {
      await store.putText(documentKey, serializeDocument(metadata), condition);
    } catch (error) {
      if (!(error instanceof ConflictError)) throw error;
      return this.settleConcurrentPush(name, key, metadata, started, archived, uploaded);
    }
    logger.info(`pushed ${name} to ${store.url(key)} (${uploaded.bytes} bytes uploaded)`);
    return this.finish(name, key, metadata, { skipped: false, archived, uploaded }, started);
  }

  /**
   * By what the image is (config digest, or layers and creation time: the same whichever engine
   * pushed it), never by compressed bytes, which differ between encoders.
   */
  private async storesSameImage(existing: StoredImage, local: ImageInfo): Promise<boolean> {
    const same = sameImage(storedIdentity(existing.metadata), local.identity);
    if (same !== undefined) return same;
    this.ctx.logger.info(`${existing.name} was stored without an image ID: comparing its content`);
    const body = await this.ctx.store.getStream(existing.key);
    const stored = await identityFromArchive(body.pipe(createGunzip()));
    return stored !== undefined && sameImage(stored, local.identity) === true;
  }

  private async objectIntact(existing: StoredImage): Promise<boolean> {
    const head = await this.ctx.store.head(existing.key);
    if (!head || head.size !== existing.metadata.size) return false;
    if (existing.metadata.manifest_digest) {
      const layout = this.layerLayout();
      if ((await layout.blobs.size(existing.metadata.manifest_digest)) === undefined) return false;
    }
    const etag = existing.metadata.object_etag;
    return typeof etag !== "string" || etag === head.etag;
  }

  /** Copies the stored pair under archive/ before a push with different content replaces it. */
  private async archive(existing: StoredImage): Promise<void> {
    const { store, logger, clock } = this.ctx;
    const target = archivedImageKey(existing.key, formatLocalStamp(clock.now()));
    logger.info(`${existing.name} is stored with different content: archiving it to ${store.url(target)}`);
    await store.copy(existing.key, target);
    await store.copy(existing.metadataKey, metadataKeyFor(target));
  }

  private layerLayout(): LayerLayout {
    const { store, transfer } = this.ctx;
    return new LayerLayout(store, new BlobStore(store, { partSizeBytes: transfer.partSizeBytes, concurrency: transfer.concurrency }));
  }

  /**
   * The layers format: only layers the bucket lacks are compressed and uploaded, then the config and
   * manifest, then the Go tool's stand-in object; the caller writes the metadata last.
   */
  private async uploadLayers(name: string, key: string, local: ImageInfo): Promise<Uploaded> {
    const { docker, store, transfer, progress, clock, user, toolVersion, logger } = this.ctx;
    const layout = this.layerLayout();
    const stored = await layout.storedLayers(local.identity.diffIds);
    logger.info(`${name}: the bucket has ${stored.size} of its ${local.identity.diffIds.length} layers`);
    const bar = progress.start(`push ${name}`, local.size, "bytes");
    let pushed: LayerPushResult | undefined;
    try {
      for (const guessBySize of [true, false]) {
        const saved = await docker.saveImage(name);
        try {
          pushed = await pushLayers(saved, layout.blobs, {
            diffIds: local.identity.diffIds,
            stored,
            gzip: { level: transfer.gzipLevel, chunkSize: transfer.chunkSizeBytes, workers: transfer.compressionWorkers },
            guessBySize,
            onBytes: (bytes) => bar.update(bytes),
          });
          break;
        } catch (error) {
          saved.destroy();
          if (!(error instanceof LayerGuessMissed) || !guessBySize) throw error;
          logger.info(`${name}: ${error.message}; exporting again`);
        }
      }
    } finally {
      bar.stop();
    }
    const { config, layers } = pushed!;
    const manifest = await layout.storeImage(config, layers);
    const standIn = await goStandIn();
    const object = await store.upload(key, Readable.from([standIn]), { partSizeBytes: transfer.partSizeBytes, concurrency: 1 });
    const newLayers = layers.filter((layer) => layer.uploaded);
    const ref = parseImageRef(name);
    const metadata: ImageMetadata = {
      checksum: createHash("md5").update(standIn).digest("hex"),
      size: standIn.length,
      created_at: formatGoTime(clock.now()),
      git_hash: ref.gitHash,
      git_time: ref.gitTime,
      image_tag: name,
      app_name: ref.app,
      sha256: createHash("sha256").update(standIn).digest("hex"),
      image_id: sha256Digest(config),
      layers: layers.map((layer) => layer.diffId),
      image_created: local.identity.created,
      compression: `gzip:${transfer.gzipLevel}`,
      object_etag: object.etag,
      pushed_by: user,
      pushed_with: toolVersion,
      format: "layers",
      manifest_digest: manifest.digest,
      stored_size: layers.reduce((sum, layer) => sum + layer.blob.size, config.length + manifest.size),
    };
    const bytes = newLayers.reduce((sum, layer) => sum + layer.blob.size, 0);
    return { metadata, uploaded: { bytes, layers: newLayers.length, reused: layers.length - newLayers.length } };
  }

  private async upload(name: string, key: string, local: ImageInfo, mtime: Date): Promise<Uploaded> {
    const { docker, store, transfer, progress, clock, user, toolVersion } = this.ctx;
    const bar = progress.start(`push ${name}`, local.size, "bytes");
    const collectGarbage = collectionPacer(COLLECTION_INTERVAL_BYTES, globalThis.gc as GarbageCollector | undefined);
    const exported = new DigestTap(
      (bytes) => {
        bar.update(bytes);
        collectGarbage(bytes);
      },
      { md5: false, sha256: false },
    );
    const compressed = new DigestTap();
    const gzip = parallelGzip({ level: transfer.gzipLevel, chunkSize: transfer.chunkSizeBytes, workers: transfer.compressionWorkers });
    try {
      const saved = await docker.saveImage(name);
      // The containerd image store does not report the config digest; the archive's manifest names it.
      let configDigest = local.identity.configDigest;
      const stream = rewriteTarTimes(saved, mtime, (manifest) => (configDigest ??= configDigestOfManifest(manifest)));
      // The compressed chunks are gzip members made for this upload alone (DigestTap passes them on as they are).
      const uploading = store.upload(key, compressed, {
        partSizeBytes: transfer.partSizeBytes,
        expectedBytes: local.size,
        concurrency: transfer.concurrency,
        chunksHandedOver: true,
      });
      // A failed upload stops the export too, instead of leaving docker save stalled on backpressure.
      uploading.catch((error: Error) => saved.destroy(error));
      const [upload, streamed] = await Promise.allSettled([uploading, pipeline(stream, exported, gzip, compressed)]);
      // A failed upload tears the export down: its typed error is the cause, the stream's abort the symptom.
      const failures = [upload, streamed].flatMap((settled) => (settled.status === "rejected" ? [settled.reason as unknown] : []));
      if (failures.length > 0) throw failures.find((error) => error instanceof S3dockError) ?? failures[0];
      const uploaded = (upload as PromiseFulfilledResult<{ etag: string }>).value;
      const digests = compressed.digests();
      const ref = parseImageRef(name);
      const metadata: ImageMetadata = {
        checksum: digests.md5,
        size: digests.size,
        created_at: formatGoTime(clock.now()),
        git_hash: ref.gitHash,
        git_time: ref.gitTime,
        image_tag: name,
        app_name: ref.app,
        sha256: digests.sha256,
        image_id: configDigest,
        layers: [...local.identity.diffIds],
        image_created: local.identity.created,
        uncompressed_size: exported.digests().size,
        compression: `gzip:${transfer.gzipLevel}`,
        object_etag: uploaded.etag,
        pushed_by: user,
        pushed_with: toolVersion,
      };
      return { metadata, uploaded: { bytes: digests.size, layers: local.identity.diffIds.length, reused: 0 } };
    } finally {
      bar.stop();
    }
  }

  /**
   * Another push of this name wrote its metadata first. If our object is the one now stored, our
   * metadata must describe it, so it replaces theirs; otherwise theirs stands and ours is skipped.
   */
  private async settleConcurrentPush(
    name: string,
    key: string,
    mine: ImageMetadata,
    started: number,
    archived: boolean,
    uploaded: Uploaded["uploaded"],
  ): Promise<PushResult> {
    const { store, logger } = this.ctx;
    const head = await store.head(key);
    const theirs = await this.catalog.readAt(key);
    if (head && theirs && head.etag === mine.object_etag) {
      await store.putText(metadataKeyFor(key), serializeDocument(mine), { ifMatch: theirs.metadataEtag });
      logger.info(`${name}: a concurrent push finished first; its metadata now describes the object this push stored`);
      return this.finish(name, key, mine, { skipped: false, archived, uploaded }, started);
    }
    if (!theirs) throw new ConflictError(`${name}: a concurrent push changed ${store.url(key)} while this one ran; run push again`);
    logger.info(`${name}: a concurrent push stored it first: skipped`);
    return this.finish(name, key, theirs.metadata, { skipped: true, archived, uploaded }, started);
  }

  private async finish(
    name: string,
    key: string,
    metadata: ImageMetadata,
    outcome: { skipped: boolean; archived: boolean; uploaded: Uploaded["uploaded"] },
    started: number,
  ): Promise<PushResult> {
    const ref = parseImageRef(name);
    await this.audit.record("push", { app: ref.app, gitHash: ref.gitHash, gitTime: ref.gitTime }, {
      image_reference: name,
      s3_path: key,
      checksum: metadata.checksum,
      size: metadata.size,
      ...(outcome.skipped ? { was_skipped: true } : {}),
      ...(outcome.archived ? { was_archived: true } : {}),
    });
    return {
      image_ref: name,
      s3_key: key,
      checksum: metadata.checksum,
      size: metadata.size,
      skipped: outcome.skipped,
      archived: outcome.archived,
      sha256: metadata.sha256,
      image_id: metadata.image_id ?? "",
      format: metadata.format ?? "archive",
      bytes_uploaded: outcome.uploaded.bytes,
      layers_uploaded: outcome.uploaded.layers,
      layers_reused: outcome.uploaded.reused,
      duration_ms: Date.now() - started,
    };
  }
}
