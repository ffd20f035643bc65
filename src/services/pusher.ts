/**
 * push: docker save → tar times set to the commit time → gzip on all cores → digests → multipart
 * upload, as one stream, then the metadata document last, which is what makes the image visible.
 * A push writes an image's key only while it holds the name's claim (a create-only document), so
 * two pushes of different content under one name cannot both write it: one wins, one is refused.
 */
import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import { ConflictError, IntegrityError, NotFoundError, S3dockError } from "../errors.js";
import { parseDocument, pushClaimSchema, serializeDocument, type ImageMetadata, type PushClaim } from "../domain/documents.js";
import { archivedImageKey, imageKey, metadataKeyFor, pushClaimKey, stagingKey } from "../domain/keys.js";
import { formatImageRef, parseImageRef, type ImageRef } from "../domain/names.js";
import { sameImage, storedIdentity } from "../domain/image-identity.js";
import { sha256Digest } from "../domain/oci.js";
import type { StorageFormat } from "../domain/config.js";
import { goStandIn, LayerLayout } from "../storage/layer-layout.js";
import { LayerGuessMissed, pushLayers, type LayerPushResult } from "../transfer/layer-push.js";
import { formatGoTime, formatLocalMonth, formatLocalStamp, gitTimeToDate, parseGoTime } from "../domain/time.js";
import type { ImageInfo } from "../clients/docker.js";
import { configDigestOfManifest, identityFromArchive } from "../transfer/archive-manifest.js";
import { limitBytes } from "../transfer/byte-limit.js";
import { collectionPacer, type GarbageCollector } from "../transfer/collection-pacer.js";
import { DigestTap } from "../transfer/digest.js";
import { parallelGzip } from "../transfer/parallel-gzip.js";
import { rewriteTarTimes } from "../transfer/tar-times.js";
import { AuditLog } from "./audit.js";
import { beingDeleted, ImageCatalog, type StoredImage } from "./catalog.js";
import type { ServiceContext } from "./context.js";
import { Lister } from "./lister.js";

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
  readonly format: StorageFormat;
  /** Bytes this push added to the bucket (new layer blobs, or the whole archive). */
  readonly bytes_uploaded: number;
  readonly layers_uploaded: number;
  readonly layers_reused: number;
  readonly duration_ms: number;
  /** push --force only: what was replaced, where it went, and what names the new content now. */
  readonly replaced?: ReplacedImage;
}

export interface ReplacedImage {
  readonly previous_image_id: string | undefined;
  /** Undefined when the stored object no longer held what its metadata described (nothing to archive). */
  readonly archive_key: string | undefined;
  /** The versions and environments that named the old content and now name the new one. */
  readonly versions: string[];
  readonly environments: string[];
}

/** What a stored image, a claim or a local image records of what it is, for storesSameImage. */
type Recorded = Pick<StoredImage, "name" | "key"> & { readonly metadata: Pick<ImageMetadata, "image_id" | "layers" | "image_created" | "uncompressed_size"> };

export interface PushOptions {
  /** Replace different content stored under the name (archiving it first). */
  readonly force?: boolean;
  /** How to store the image: "layers" (default) or "archive" (one Go-compatible .tar.gz). */
  readonly format?: StorageFormat;
}

interface Uploaded {
  readonly metadata: ImageMetadata;
  readonly uploaded: { readonly bytes: number; readonly layers: number; readonly reused: number };
}

const NOTHING_UPLOADED: Uploaded["uploaded"] = { bytes: 0, layers: 0, reused: 0 };

/** A claim older than this belongs to a push that died: another push may take it over. */
export const STALE_CLAIM_MS = 60 * 60 * 1000;
/** A push re-reads and starts over this often when a concurrent push changes the image under it. */
const MAX_ATTEMPTS = 3;

export class Pusher {
  private readonly catalog: ImageCatalog;
  private readonly audit: AuditLog;

  constructor(private readonly ctx: ServiceContext) {
    this.catalog = new ImageCatalog(ctx.store);
    this.audit = new AuditLog(ctx);
  }

  /**
   * An image name holds one content for good: different content under a stored name is refused,
   * unless `force`, which stores the new content first, then archives the old pair and replaces it.
   */
  async push(reference: string, options: PushOptions = {}): Promise<PushResult> {
    const format = options.format ?? this.ctx.storageFormat;
    const started = Date.now();
    const ref = parseImageRef(reference);
    const name = formatImageRef(ref);
    const { docker } = this.ctx;
    const local = await docker.inspectImage(name);
    if (!local) throw new NotFoundError(`image ${name} is not in the Docker engine at ${docker.address} (build it first: s3dock build ${ref.app})`);
    for (let attempt = 1; ; attempt++) {
      const existing = await this.catalog.find(ref);
      let same = false;
      if (existing) {
        if (existing.markedForDeletion) throw new ConflictError(`${beingDeleted(existing)}: push it again once that cleanup has finished`);
        same = await this.storesSameImage(existing, local);
        if (same && (await this.objectIntact(existing))) {
          const confirmed = await this.confirmStored(existing);
          if (confirmed) return this.finish(name, confirmed.key, confirmed.metadata, { skipped: true, archived: false, uploaded: NOTHING_UPLOADED }, started);
          if (attempt >= MAX_ATTEMPTS) throw new ConflictError(`${name} keeps being changed while this push confirms it; run push again`);
          continue;
        }
        if (!same && !options.force) {
          throw new ConflictError(
            `${name} is already stored with different content (image ${existing.metadata.image_id ?? "recorded without an ID"}; this one is ${local.identity.configDigest ?? local.id}): ` +
              `an image name never changes what it means; build a new commit, or push --force to archive the stored image and replace it`,
          );
        }
      }
      // Everything that writes the image's key happens under the claim, after looking again.
      const claim = await this.claim(ref, local);
      try {
        const current = await this.catalog.find(ref);
        if (current?.metadataEtag !== existing?.metadataEtag) {
          if (attempt < MAX_ATTEMPTS) continue;
          throw new ConflictError(`${name} keeps being changed by concurrent pushes; run push again`);
        }
        return current ? await this.replace(current, local, same, format, started) : await this.store(ref, local, format, started);
      } finally {
        await this.releaseClaim(claim);
      }
    }
  }

  /**
   * By what the image is (config digest, or layers and creation time: the same whichever engine
   * pushed it), never by compressed bytes, which differ between encoders. The one place that decides
   * whether a stored (or claimed) image is the local one.
   */
  private async storesSameImage(existing: Recorded, local: ImageInfo): Promise<boolean> {
    const same = sameImage(storedIdentity(existing.metadata as ImageMetadata), local.identity);
    if (same !== undefined) return same;
    this.ctx.logger.info(`${existing.name} was stored without an image ID: comparing its content`);
    const gunzip = createGunzip();
    pipeline(await this.ctx.store.getStream(existing.key), gunzip).catch(() => undefined); // its failure ends the reading below
    // Bounded like a pull's decompression: an archive from the bucket may inflate without end.
    const limit = existing.metadata.uncompressed_size ?? this.ctx.transfer.maxImageBytesWithoutSize;
    const tar = limitBytes(gunzip, limit, () => new IntegrityError(`${this.ctx.store.url(existing.key)} decompresses to more than ${limit} bytes: refusing to read it`));
    const stored = await identityFromArchive(Readable.from(tar));
    return stored !== undefined && sameImage(stored, local.identity) === true;
  }

  private async objectIntact(existing: StoredImage): Promise<boolean> {
    const head = await this.ctx.store.head(existing.key);
    if (!head || head.size !== existing.metadata.size) return false;
    const etag = existing.metadata.object_etag;
    if (typeof etag === "string" && etag !== head.etag) return false;
    return !existing.metadata.manifest_digest || (await this.layerLayout().blobs.size(existing.metadata.manifest_digest)) !== undefined;
  }

  /**
   * "Already stored: skipped" is only said of an image that stays stored: its metadata is
   * rewritten (a new write id, If-Match on what was read), which changes its ETag and age, so a
   * `cleanup remote` that chose it earlier fails to mark it. Undefined: it changed meanwhile, look again.
   */
  private async confirmStored(existing: StoredImage): Promise<StoredImage | undefined> {
    // A stale mark left by a cleanup that died goes too.
    const metadata: ImageMetadata = { ...existing.metadata, deleting: undefined, write_id: this.ctx.uniqueId() };
    try {
      const { etag } = await this.ctx.store.putText(existing.metadataKey, serializeDocument(metadata), { ifMatch: existing.metadataEtag });
      this.ctx.logger.info(`${existing.name} is already stored at ${this.ctx.store.url(existing.key)}: skipped`);
      return { ...existing, metadata, metadataEtag: etag };
    } catch (error) {
      if (!(error instanceof ConflictError)) throw error;
      this.ctx.logger.debug(`${existing.name}: its metadata changed while confirming it; looking again`);
      return undefined;
    }
  }

  /**
   * Creates the claim on the image name (create-only). A claim of another push of the same image
   * (a re-run after a crash, or a concurrent push of the same content) or one older than an hour is
   * taken over; a live claim for other content means that push wins and this one is refused.
   */
  private async claim(ref: ImageRef, local: ImageInfo): Promise<{ key: string; text: string }> {
    const { store, clock, user, uniqueId } = this.ctx;
    const name = formatImageRef(ref);
    const key = pushClaimKey(ref);
    const document: PushClaim = {
      image_tag: name,
      image_id: local.identity.configDigest ?? local.id,
      layers: [...local.identity.diffIds],
      image_created: local.identity.created,
      claimed_by: user,
      claimed_at: formatGoTime(clock.now()),
      write_id: uniqueId(),
    };
    const text = serializeDocument(document);
    for (let attempt = 1; ; attempt++) {
      try {
        await store.putText(key, text, { ifNoneMatch: true });
        return { key, text };
      } catch (error) {
        if (!(error instanceof ConflictError) || attempt >= MAX_ATTEMPTS) throw error;
      }
      const held = await store.getText(key);
      if (!held) continue; // released meanwhile
      const other = parseDocument(pushClaimSchema, held.text, store.url(key));
      const age = clock.now().getTime() - parseGoTime(other.claimed_at);
      const same = await this.storesSameImage({ name, key: "", metadata: { image_id: other.image_id, layers: other.layers, image_created: other.image_created as string | undefined } }, local);
      if (!same && !(age > STALE_CLAIM_MS)) {
        throw new ConflictError(
          `another push of ${name} with different content (image ${other.image_id}, by ${other.claimed_by} since ${other.claimed_at}) is under way: ` +
            `an image name holds one content; build a new commit`,
        );
      }
      this.ctx.logger.info(`${name}: taking over the claim of ${same ? "a push of the same image" : "a push that died"} (by ${other.claimed_by} since ${other.claimed_at})`);
      try {
        await store.putText(key, text, { ifMatch: held.etag });
        return { key, text };
      } catch (error) {
        if (!(error instanceof ConflictError) || attempt >= MAX_ATTEMPTS) throw error;
      }
    }
  }

  /** Removes our claim; one another push has taken over stays. A failure here leaves a claim that the next push of this image takes over. */
  private async releaseClaim(claim: { key: string; text: string }): Promise<void> {
    try {
      if ((await this.ctx.store.getText(claim.key))?.text === claim.text) await this.ctx.store.delete(claim.key);
    } catch (error) {
      this.ctx.logger.warn(`could not remove the push claim ${this.ctx.store.url(claim.key)}: ${(error as Error).message}`);
    }
  }

  /** A name not stored yet: the object under its final key, then the metadata, create-only, last. */
  private async store(ref: ImageRef, local: ImageInfo, format: StorageFormat, started: number): Promise<PushResult> {
    const { store, logger, clock } = this.ctx;
    const name = formatImageRef(ref);
    const key = imageKey(ref, formatLocalMonth(clock.now()));
    const { metadata, uploaded } = await this.uploadAs(format, name, key, local, gitTimeToDate(ref.gitTime));
    try {
      await store.putText(metadataKeyFor(key), serializeDocument(metadata), { ifNoneMatch: true });
    } catch (error) {
      if (!(error instanceof ConflictError)) throw error;
      return this.settleConcurrentPush(name, key, metadata, local, started);
    }
    logger.info(`pushed ${name} to ${store.url(key)} (${uploaded.bytes} bytes uploaded)`);
    return this.finish(name, key, metadata, { skipped: false, archived: false, uploaded }, started);
  }

  /**
   * push --force (other content), or a repair (same image, object missing or damaged): the new
   * content goes to a staging key first, so a failed export archives and changes nothing. Then the
   * old pair is archived (create-only, unique key), the object replaced by a server-side copy and
   * the metadata swapped with If-Match on what was read.
   */
  private async replace(current: StoredImage, local: ImageInfo, same: boolean, format: StorageFormat, started: number): Promise<PushResult> {
    const { store, logger, clock, uniqueId } = this.ctx;
    const name = current.name;
    if (same) logger.warn(`${store.url(current.key)} is missing or does not match its metadata: uploading it again`);
    const staging = stagingKey(current.ref, uniqueId());
    const { metadata: uploaded, uploaded: sent } = await this.uploadAs(format, name, staging, local, gitTimeToDate(current.ref.gitTime));
    let archiveKey: string | undefined;
    try {
      if (!same) {
        if (await this.objectIntact(current)) {
          archiveKey = archivedImageKey(current.key, formatLocalStamp(clock.now()), uniqueId());
          logger.info(`${name} is stored with different content: archiving it to ${store.url(archiveKey)}`);
          await store.copy(current.key, archiveKey, { createOnly: true });
          await store.putText(metadataKeyFor(archiveKey), current.metadataText, { ifNoneMatch: true });
        } else {
          logger.warn(`${store.url(current.key)} no longer holds what its metadata describes (an earlier replacement cut off?): nothing to archive`);
        }
      }
      await store.copy(staging, current.key);
      const head = await store.head(current.key);
      const metadata: ImageMetadata = { ...uploaded, object_etag: head?.etag ?? uploaded.object_etag };
      try {
        await store.putText(current.metadataKey, serializeDocument(metadata), { ifMatch: current.metadataEtag });
      } catch (error) {
        if (!(error instanceof ConflictError)) throw error;
        throw new ConflictError(`${name}: its metadata was changed by someone else (a cleanup, or another tool) while this push replaced it; look at it and push again`);
      }
      logger.info(`replaced ${name} at ${store.url(current.key)} (${metadata.size} bytes)`);
      const replaced = same ? undefined : { previous_image_id: current.metadata.image_id, archive_key: archiveKey, ...(await this.namedBy(current)) };
      return this.finish(name, current.key, metadata, { skipped: false, archived: archiveKey !== undefined, uploaded: sent }, started, replaced);
    } finally {
      await store.delete(staging).catch((error: Error) => logger.warn(`could not remove ${store.url(staging)}: ${error.message}`));
    }
  }

  /** The versions and environments (directly or through a version) that name the image. */
  private async namedBy(image: StoredImage): Promise<{ versions: string[]; environments: string[] }> {
    const lister = new Lister(this.ctx);
    const [tags, envs] = await Promise.all([lister.tags(image.ref.app), lister.envs(image.ref.app)]);
    const tagKeys = new Set(tags.filter((tag) => tag.target_image === image.name).map((tag) => tag.s3_path));
    return {
      versions: tags.filter((tag) => tagKeys.has(tag.s3_path)).map((tag) => tag.version),
      environments: envs
        .filter((env) => (env.target_type === "tag" ? tagKeys.has(env.target_path) : env.target_path === image.key))
        .map((env) => env.environment),
    };
  }

  private uploadAs(format: StorageFormat, name: string, key: string, local: ImageInfo, mtime: Date): Promise<Uploaded> {
    return format === "layers" ? this.uploadLayers(name, key, local) : this.upload(name, key, local, mtime);
  }

  private layerLayout(): LayerLayout {
    const { store, transfer } = this.ctx;
    return LayerLayout.over(store, transfer);
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
      write_id: this.ctx.uniqueId(),
      format: "layers",
      manifest_digest: manifest.digest,
      stored_size: layers.reduce((sum, layer) => sum + layer.blob.size, config.length + manifest.size),
    };
    const bytes = newLayers.reduce((sum, layer) => sum + layer.blob.size, 0);
    return { metadata, uploaded: { bytes, layers: newLayers.length, reused: layers.length - newLayers.length } };
  }

  private async upload(name: string, key: string, local: ImageInfo, mtime: Date): Promise<Uploaded> {
    const { docker, store, transfer, progress, clock, user, toolVersion, uniqueId } = this.ctx;
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
        write_id: uniqueId(),
      };
      return { metadata, uploaded: { bytes: digests.size, layers: local.identity.diffIds.length, reused: 0 } };
    } finally {
      bar.stop();
    }
  }

  /**
   * Metadata appeared under our key while we held the claim (another tool, or a push that took the
   * claim over). Other content stands and this push is refused. The same image: if our object is
   * the one now stored, our metadata must describe it, so it replaces theirs; otherwise theirs stands.
   */
  private async settleConcurrentPush(name: string, key: string, mine: ImageMetadata, local: ImageInfo, started: number): Promise<PushResult> {
    const { store, logger } = this.ctx;
    const head = await store.head(key);
    const theirs = await this.catalog.readAt(key);
    if (!theirs) throw new ConflictError(`${name}: a concurrent push changed ${store.url(key)} while this one ran; run push again`);
    if (!(await this.storesSameImage(theirs, local))) {
      throw new ConflictError(`${name}: a concurrent push stored other content under this name first (image ${theirs.metadata.image_id ?? "without an ID"}); this push is refused`);
    }
    if (head && head.etag === mine.object_etag) {
      await store.putText(metadataKeyFor(key), serializeDocument(mine), { ifMatch: theirs.metadataEtag });
      logger.info(`${name}: a concurrent push finished first; its metadata now describes the object this push stored`);
      return this.finish(name, key, mine, { skipped: false, archived: false, uploaded: NOTHING_UPLOADED }, started);
    }
    logger.info(`${name}: a concurrent push stored it first: skipped`);
    return this.finish(name, key, theirs.metadata, { skipped: true, archived: false, uploaded: NOTHING_UPLOADED }, started);
  }

  private async finish(
    name: string,
    key: string,
    metadata: ImageMetadata,
    outcome: { skipped: boolean; archived: boolean; uploaded: Uploaded["uploaded"] },
    started: number,
    replaced?: ReplacedImage,
  ): Promise<PushResult> {
    const ref = parseImageRef(name);
    await this.audit.record("push", { app: ref.app, gitHash: ref.gitHash, gitTime: ref.gitTime }, {
      image_reference: name,
      s3_path: key,
      checksum: metadata.checksum,
      size: metadata.size,
      ...(outcome.skipped ? { was_skipped: true } : {}),
      ...(outcome.archived ? { was_archived: true } : {}),
      ...(replaced ? { replaced_image_id: replaced.previous_image_id, archived_to: replaced.archive_key, forced: true } : {}),
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
      ...(replaced ? { replaced } : {}),
    };
  }
}
