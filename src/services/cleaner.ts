/**
 * cleanup: removes what nothing refers to any more. Locally, an app's older images in the engine;
 * remotely, bucket images that no version tag or env pointer names, by a protocol (removeBatch)
 * under which a concurrent promote, tag, push or pull never ends up naming a deleted image.
 */
import pMap from "p-map";
import { ConflictError } from "../errors.js";
import { serializeDocument } from "../domain/documents.js";
import { archivedImageKey, imageKey, imagesPrefix, metadataKeyFor, pushClaimsPrefix, stagingPrefix } from "../domain/keys.js";
import { parseAppName, parseImageRef } from "../domain/names.js";
import { formatGoTime, formatLocalStamp } from "../domain/time.js";
import { AuditLog } from "./audit.js";
import { BlobCollector, DEFAULT_BLOB_GRACE_MS, type BlobCollection } from "./blob-collector.js";
import { ImageCatalog } from "./catalog.js";
import type { ServiceContext } from "./context.js";
import { Lister } from "./lister.js";
import { References, ReferenceScan } from "./references.js";

/** An unfinished multipart upload older than this belongs to a push that died. */
export const STALE_UPLOAD_MS = 60 * 60 * 1000;
/** Candidates marked, then checked against one fresh reading of the references, then deleted. */
const BATCH_SIZE = 200;
/** Images marked or deleted at once. */
const DELETE_CONCURRENCY = 16;

export interface Skipped {
  readonly image: string;
  readonly reason: string;
}

export interface LocalCleanupResult {
  readonly app: string;
  readonly dry_run: boolean;
  readonly keep: number;
  readonly removed: string[];
  readonly skipped: Skipped[];
}

export interface RemoteCandidate {
  readonly image: string;
  readonly key: string;
  readonly size: number;
  readonly created_at: string;
  readonly action: "delete" | "archive";
  readonly archive_key?: string;
}

export interface RemoteCleanupResult {
  readonly app: string;
  readonly dry_run: boolean;
  readonly candidates: RemoteCandidate[];
  /** The images deleted or archived (in a dry run: none). */
  readonly deleted: RemoteCandidate[];
  readonly skipped: Skipped[];
  readonly bytes_freed: number;
  readonly stale_uploads: { key: string; initiated: string | undefined }[];
  /** The layers format's blobs no image needs any more (bucket-wide): counted in a dry run, deleted with --yes. */
  readonly blobs: BlobCollection;
  /** Staging objects and push claims older than an hour, left by pushes that died. */
  readonly leftovers: string[];
}

export interface RemoteCleanupOptions {
  readonly olderThanMs: number;
  readonly keep: number;
  /** Unreferenced images older than this (but younger than olderThanMs) move to archive/ instead of staying. */
  readonly archiveOlderThanMs?: number;
  readonly yes: boolean;
  /** Blobs nothing needs are deleted only once older than this (a push under way uploads its blobs before its metadata). */
  readonly blobGraceMs?: number;
}

export class Cleaner {
  private readonly catalog: ImageCatalog;
  private readonly lister: Lister;
  private readonly audit: AuditLog;

  constructor(private readonly ctx: ServiceContext) {
    this.catalog = new ImageCatalog(ctx.store);
    this.lister = new Lister(ctx);
    this.audit = new AuditLog(ctx);
  }

  /** Removes the app's older images from the engine: never the newest `keep`, one a container uses, or one an env pointer names. */
  async local(appInput: string, options: { keep: number; dryRun: boolean }): Promise<LocalCleanupResult> {
    const app = parseAppName(appInput);
    const { docker, logger } = this.ctx;
    const [tags, inUse, envs] = await Promise.all([docker.listImageTags(app), docker.imageIdsInUse(), this.lister.envs(app)]);
    const pointed = new Map(envs.map((env) => [env.source_image, env.environment]));
    const removed: string[] = [];
    const skipped: Skipped[] = [];
    const newestFirst = [...tags].sort((a, b) => b.tag.localeCompare(a.tag));
    for (const [index, { tag, id }] of newestFirst.entries()) {
      if (index < options.keep) skipped.push({ image: tag, reason: `among the newest ${options.keep}` });
      else if (inUse.has(id)) skipped.push({ image: tag, reason: "used by a container" });
      else if (pointed.has(tag)) skipped.push({ image: tag, reason: `named by environment ${pointed.get(tag)}` });
      else {
        if (!options.dryRun) {
          await docker.removeImage(tag);
          logger.info(`removed ${tag}`);
        }
        removed.push(tag);
      }
    }
    return { app, dry_run: options.dryRun, keep: options.keep, removed, skipped };
  }

  async remote(appInput: string, options: RemoteCleanupOptions): Promise<RemoteCleanupResult> {
    const app = parseAppName(appInput);
    const { store, clock } = this.ctx;
    const scan = new ReferenceScan(store, new References(store, this.catalog), (message) => this.ctx.logger.warn(`skipped: ${message}`));
    const [pairs, referenced] = await Promise.all([this.catalog.listPairs(app), scan.scan(app)]);
    // The bucket's clock (its Date header) against the objects' LastModified: a host whose own
    // clock is off deletes nothing early. The metadata's LastModified is the last push of the image.
    const now = clock.now().getTime();
    const candidates: Candidate[] = [];
    const skipped: Skipped[] = [];
    for (const [index, pair] of pairs.entries()) {
      const name = pair.image.ref;
      const key = imageKey(pair.image, pair.image.month);
      const reason = referenced.get(key);
      if (reason) {
        skipped.push({ image: name, reason });
        continue;
      }
      if (index < options.keep) {
        skipped.push({ image: name, reason: `among the newest ${options.keep}` });
        continue;
      }
      const age = now - (pair.metadata.lastModified?.getTime() ?? now);
      const base = { image: name, key, size: pair.object.size, created_at: pair.metadata.lastModified?.toISOString() ?? "", metadataEtag: pair.metadata.etag };
      if (age >= options.olderThanMs) candidates.push({ ...base, action: "delete" });
      else if (options.archiveOlderThanMs !== undefined && age >= options.archiveOlderThanMs) candidates.push({ ...base, action: "archive" });
      else skipped.push({ image: name, reason: "too young" });
    }
    const staleUploads = (await Promise.all([imagesPrefix(app), stagingPrefix(app)].map((prefix) => store.listPendingUploads(prefix)))).flat().filter(
      (upload) => upload.initiated !== undefined && now - upload.initiated.getTime() > STALE_UPLOAD_MS,
    );
    const stale_uploads = staleUploads.map((upload) => ({ key: upload.key, initiated: upload.initiated?.toISOString() }));
    const leftovers: string[] = [];
    for (const prefix of [stagingPrefix(app), pushClaimsPrefix(app)]) {
      for await (const object of store.list(prefix)) {
        if (object.lastModified !== undefined && now - object.lastModified.getTime() > STALE_UPLOAD_MS) leftovers.push(object.key);
      }
    }
    const visible = (c: Candidate): RemoteCandidate => ({ image: c.image, key: c.key, size: c.size, created_at: c.created_at, action: c.action });
    if (!options.yes) {
      const bytes = candidates.filter((c) => c.action === "delete").reduce((sum, c) => sum + c.size, 0);
      const blobs = await this.collectBlobs(options);
      return { app, dry_run: true, candidates: candidates.map(visible), deleted: [], skipped, bytes_freed: bytes, stale_uploads, leftovers, blobs };
    }

    const deleted: RemoteCandidate[] = [];
    for (let start = 0; start < candidates.length; start += BATCH_SIZE) {
      const batch = await this.removeBatch(app, candidates.slice(start, start + BATCH_SIZE), scan, skipped);
      deleted.push(...batch);
    }
    for (const upload of staleUploads) {
      await store.abortUpload(upload);
      this.ctx.logger.info(`aborted the unfinished upload of ${upload.key}`);
    }
    const bytesFreed = deleted.filter((c) => c.action === "delete").reduce((sum, c) => sum + c.size, 0);
    for (const key of leftovers) {
      await store.delete(key);
      this.ctx.logger.info(`deleted ${key}, left by a push that died`);
    }
    const blobs = await this.collectBlobs(options);
    return { app, dry_run: false, candidates: candidates.map(visible), deleted, skipped, bytes_freed: bytesFreed, stale_uploads, leftovers, blobs };
  }

  private collectBlobs(options: RemoteCleanupOptions): Promise<BlobCollection> {
    return new BlobCollector(this.ctx).collect({ yes: options.yes, graceMs: options.blobGraceMs ?? DEFAULT_BLOB_GRACE_MS });
  }

  /**
   * One batch of the deletion protocol. 1: mark each candidate's metadata as being deleted, with
   * If-Match on the ETag the listing saw, so an image pushed again, promoted or changed in any way
   * since is left alone. 2: only then look for references again. A tag or pointer written before
   * a mark is found here, and the image is unmarked and kept; one written after it is taken back by
   * its writer, which checks the image afterwards (ImageCatalog.whyGone). 3: delete the object, then
   * the metadata, each image only while its metadata is still our mark, and record it in the audit
   * trail at once. Marking in batches means the references are read once per batch, not per image.
   */
  private async removeBatch(app: string, batch: Candidate[], scan: ReferenceScan, skipped: Skipped[]): Promise<RemoteCandidate[]> {
    const { store, logger, clock, uniqueId, user } = this.ctx;
    const cleanupId = uniqueId();
    const marked = (
      await pMap(
        batch,
        async (candidate) => {
          const outcome = await this.mark(candidate, { since: formatGoTime(clock.now()), by: `${user} (cleanup ${cleanupId})` });
          if (typeof outcome === "string") skipped.push({ image: candidate.image, reason: outcome });
          return typeof outcome === "string" ? [] : [outcome];
        },
        { concurrency: DELETE_CONCURRENCY },
      )
    ).flat();
    const referenced = await scan.scan(app);
    const removed = (
      await pMap(
        marked,
        async (mark) => {
          const { candidate } = mark;
          const reason = referenced.get(candidate.key);
          if (reason) {
            await store.putText(metadataKeyFor(candidate.key), mark.original, { ifMatch: mark.etag }).catch((error: Error) => {
              logger.warn(`could not unmark ${candidate.image}: ${error.message} (readers ignore the mark after an hour)`);
            });
            skipped.push({ image: candidate.image, reason: `${reason} (since the listing)` });
            return [];
          }
          const done = await this.remove(mark);
          if (done) await this.recordRemoval(app, done);
          return done ? [done] : [];
        },
        { concurrency: DELETE_CONCURRENCY },
      )
    ).flat();
    return removed.map((c) => ({ image: c.image, key: c.key, size: c.size, created_at: c.created_at, action: c.action, ...(c.archive_key ? { archive_key: c.archive_key } : {}) }));
  }

  /** One audit event per image, as soon as it is gone: an interrupted run has recorded what it removed. */
  private async recordRemoval(app: string, removed: Candidate): Promise<void> {
    const { gitHash, gitTime } = parseImageRef(removed.image);
    await this.audit.record("cleanup", { app, gitHash, gitTime }, {
      deleted: removed.action === "delete" ? [removed.image] : [],
      archived: removed.action === "archive" ? [removed.image] : [],
      bytes_freed: removed.action === "delete" ? removed.size : 0,
    });
  }

  /** Marks the candidate's metadata (If-Match on the listed ETag); a string says why it is left alone. */
  private async mark(candidate: Candidate, deleting: { since: string; by: string }): Promise<Mark | string> {
    const { store } = this.ctx;
    const image = await this.catalog.readAt(candidate.key);
    if (!image) return "deleted since the listing";
    if (image.markedForDeletion) return `being deleted by another cleanup (${image.metadata.deleting!.by})`;
    if (image.metadataEtag !== candidate.metadataEtag) return "changed since the listing (pushed again?)";
    const text = serializeDocument({ ...image.metadata, deleting });
    try {
      const { etag } = await store.putText(image.metadataKey, text, { ifMatch: image.metadataEtag });
      // Restoring it (unmarking) writes the metadata back as it was, with a new write id.
      const original = serializeDocument({ ...image.metadata, deleting: undefined, write_id: this.ctx.uniqueId() });
      return { candidate, etag, original, archivedMetadata: image.metadataText };
    } catch (error) {
      if (error instanceof ConflictError) return "changed since the listing";
      throw error;
    }
  }

  /** Archives (when asked) and deletes one marked image: the object first, then the metadata, while it is still our mark. */
  private async remove(mark: Mark): Promise<(Candidate & { archive_key?: string }) | undefined> {
    const { store, logger, clock, uniqueId } = this.ctx;
    const { candidate } = mark;
    const metadataKey = metadataKeyFor(candidate.key);
    let archiveKey: string | undefined;
    if (candidate.action === "archive") {
      archiveKey = archivedImageKey(candidate.key, formatLocalStamp(clock.now()), uniqueId());
      await store.copy(candidate.key, archiveKey, { createOnly: true });
      await store.putText(metadataKeyFor(archiveKey), mark.archivedMetadata, { ifNoneMatch: true });
    }
    if ((await store.head(metadataKey))?.etag !== mark.etag) {
      logger.warn(`${candidate.image} changed while being deleted: left alone`);
      return undefined;
    }
    // The object first: while the marked metadata stands the image counts as gone for every reader,
    // and no push writes the key (it refuses a marked image), so nothing can slip in between.
    await store.delete(candidate.key);
    await store.delete(metadataKey);
    logger.info(`${candidate.action === "archive" ? "archived" : "deleted"} ${candidate.image} (${candidate.size} bytes)`);
    return { ...candidate, ...(archiveKey ? { archive_key: archiveKey } : {}) };
  }
}

interface Candidate {
  readonly image: string;
  readonly key: string;
  readonly size: number;
  readonly created_at: string;
  readonly action: "delete" | "archive";
  /** The metadata's ETag in the listing the decision was made on. */
  readonly metadataEtag: string;
}

interface Mark {
  readonly candidate: Candidate;
  /** The ETag of our marked metadata. */
  readonly etag: string;
  /** The metadata to write back if a reference turns up. */
  readonly original: string;
  /** The metadata as it was before the mark, for the archive. */
  readonly archivedMetadata: string;
}
