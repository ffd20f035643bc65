/**
 * push: docker save → tar times set to the commit time → gzip on all cores → digests → multipart
 * upload, as one stream, then the metadata document last, which is what makes the image visible.
 */
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import { ConflictError, IntegrityError, NotFoundError, S3dockError } from "../errors.js";
import { serializeDocument, type ImageMetadata } from "../domain/documents.js";
import { archivedImageKey, imageKey, metadataKeyFor } from "../domain/keys.js";
import { formatImageRef, parseImageRef } from "../domain/names.js";
import { formatGoTime, formatLocalMonth, formatLocalStamp, gitTimeToDate } from "../domain/time.js";
import type { ImageInfo } from "../clients/docker.js";
import { imageIdFromArchive } from "../transfer/archive-manifest.js";
import { limitBytes } from "../transfer/byte-limit.js";
import { collectionPacer, type GarbageCollector } from "../transfer/collection-pacer.js";
import { DigestTap } from "../transfer/digest.js";
import { parallelGzip } from "../transfer/parallel-gzip.js";
import { rewriteTarTimes } from "../transfer/tar-times.js";
import { AuditLog } from "./audit.js";
import { ImageCatalog, type StoredImage } from "./catalog.js";
import type { ServiceContext } from "./context.js";

/** How much of the export passes between the full collections that free its spent socket buffers. */
const COLLECTION_INTERVAL_BYTES = 16 * 1024 * 1024;

export interface PushResult {
  readonly image_ref: string;
  readonly s3_key: string;
  readonly checksum: string;
  readonly size: number;
  readonly skipped: boolean;
  readonly archived: boolean;
  readonly sha256: string | undefined;
  readonly image_id: string;
  readonly duration_ms: number;
}

export class Pusher {
  private readonly catalog: ImageCatalog;
  private readonly audit: AuditLog;

  constructor(private readonly ctx: ServiceContext) {
    this.catalog = new ImageCatalog(ctx.store);
    this.audit = new AuditLog(ctx);
  }

  async push(reference: string): Promise<PushResult> {
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
          return this.finish(name, existing.key, existing.metadata, { skipped: true, archived: false }, started);
        }
        logger.warn(`${store.url(existing.key)} is missing or does not match its metadata: uploading it again`);
      } else {
        await this.archive(existing);
        archived = true;
      }
    }

    const key = existing?.key ?? imageKey(ref, formatLocalMonth(this.ctx.clock.now()));
    const metadata = await this.upload(name, key, local, gitTimeToDate(ref.gitTime));
    const documentKey = metadataKeyFor(key);
    const condition = existing ? { ifMatch: existing.metadataEtag } : ({ ifNoneMatch: true } as const);
    try {
      await store.putText(documentKey, serializeDocument(metadata), condition);
    } catch (error) {
      if (!(error instanceof ConflictError)) throw error;
      return this.settleConcurrentPush(name, key, metadata, started, archived);
    }
    logger.info(`pushed ${name} to ${store.url(key)} (${metadata.size} bytes)`);
    return this.finish(name, key, metadata, { skipped: false, archived }, started);
  }

  /** By what the image is (its ID), never by compressed bytes, which differ between encoders. */
  private async storesSameImage(existing: StoredImage, local: ImageInfo): Promise<boolean> {
    if (existing.metadata.image_id) return existing.metadata.image_id === local.id;
    this.ctx.logger.info(`${existing.name} was stored without an image ID: comparing its content`);
    const gunzip = createGunzip();
    pipeline(await this.ctx.store.getStream(existing.key), gunzip).catch(() => undefined); // its failure ends the reading below
    // Bounded like a pull's decompression: an archive from the bucket may inflate without end.
    const limit = existing.metadata.uncompressed_size ?? this.ctx.transfer.maxImageBytesWithoutSize;
    const tar = limitBytes(gunzip, limit, () => new IntegrityError(`${this.ctx.store.url(existing.key)} decompresses to more than ${limit} bytes: refusing to read it`));
    return (await imageIdFromArchive(Readable.from(tar))) === local.id;
  }

  private async objectIntact(existing: StoredImage): Promise<boolean> {
    const head = await this.ctx.store.head(existing.key);
    if (!head || head.size !== existing.metadata.size) return false;
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

  private async upload(name: string, key: string, local: ImageInfo, mtime: Date): Promise<ImageMetadata> {
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
      const stream = rewriteTarTimes(saved, mtime);
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
      return {
        checksum: digests.md5,
        size: digests.size,
        created_at: formatGoTime(clock.now()),
        git_hash: ref.gitHash,
        git_time: ref.gitTime,
        image_tag: name,
        app_name: ref.app,
        sha256: digests.sha256,
        image_id: local.id,
        layers: [...local.layers],
        uncompressed_size: exported.digests().size,
        compression: `gzip:${transfer.gzipLevel}`,
        object_etag: uploaded.etag,
        pushed_by: user,
        pushed_with: toolVersion,
      };
    } finally {
      bar.stop();
    }
  }

  /**
   * Another push of this name wrote its metadata first. If our object is the one now stored, our
   * metadata must describe it, so it replaces theirs; otherwise theirs stands and ours is skipped.
   */
  private async settleConcurrentPush(name: string, key: string, mine: ImageMetadata, started: number, archived: boolean): Promise<PushResult> {
    const { store, logger } = this.ctx;
    const head = await store.head(key);
    const theirs = await this.catalog.readAt(key);
    if (head && theirs && head.etag === mine.object_etag) {
      await store.putText(metadataKeyFor(key), serializeDocument(mine), { ifMatch: theirs.metadataEtag });
      logger.info(`${name}: a concurrent push finished first; its metadata now describes the object this push stored`);
      return this.finish(name, key, mine, { skipped: false, archived }, started);
    }
    if (!theirs) throw new ConflictError(`${name}: a concurrent push changed ${store.url(key)} while this one ran; run push again`);
    logger.info(`${name}: a concurrent push stored it first: skipped`);
    return this.finish(name, key, theirs.metadata, { skipped: true, archived }, started);
  }

  private async finish(
    name: string,
    key: string,
    metadata: ImageMetadata,
    outcome: { skipped: boolean; archived: boolean },
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
      duration_ms: Date.now() - started,
    };
  }
}
