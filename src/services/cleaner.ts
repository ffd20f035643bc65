/**
 * cleanup: removes what nothing refers to any more. Locally, an app's older images in the engine;
 * remotely, bucket images that no version tag or env pointer names. References are read again right
 * before each remote delete, so an image promoted meanwhile survives.
 */
import { archivedImageKey, imageKey, imagesPrefix, metadataKeyFor } from "../domain/keys.js";
import { parseAppName, parseImageRef } from "../domain/names.js";
import { formatLocalStamp, gitTimeToDate } from "../domain/time.js";
import { AuditLog } from "./audit.js";
import { ImageCatalog } from "./catalog.js";
import type { ServiceContext } from "./context.js";
import { Lister } from "./lister.js";

/** An unfinished multipart upload older than this belongs to a push that died. */
export const STALE_UPLOAD_MS = 60 * 60 * 1000;

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
}

export interface RemoteCleanupOptions {
  readonly olderThanMs: number;
  readonly keep: number;
  /** Unreferenced images older than this (but younger than olderThanMs) move to archive/ instead of staying. */
  readonly archiveOlderThanMs?: number;
  readonly yes: boolean;
}

/** Go writes up to nine fractional digits; Date.parse takes three. */
const parseGoTime = (value: string): number => Date.parse(value.replace(/(\.\d{3})\d+/, "$1"));

export class Cleaner {
  private readonly catalog: ImageCatalog;
  private readonly lister: Lister;
  private readonly audit: AuditLog;

  constructor(private readonly ctx: ServiceContext) {
    this.catalog = new ImageCatalog(ctx.store);
    this.lister = new Lister(ctx);
    this.audit = new AuditLog(ctx);
  }

  /** Image name → why it must stay (the first tag or env naming it). Read fresh on every call. */
  async references(app: string): Promise<Map<string, string>> {
    const [tags, envs] = await Promise.all([this.lister.tags(app), this.lister.envs(app)]);
    const named = new Map<string, string>();
    for (const env of envs) if (!named.has(env.source_image)) named.set(env.source_image, `named by environment ${env.environment}`);
    for (const tag of tags) if (!named.has(tag.target_image)) named.set(tag.target_image, `named by tag ${tag.version}`);
    return named;
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
    const { store, clock, logger } = this.ctx;
    const now = clock.now();
    const [images, referenced] = await Promise.all([this.catalog.list(app), this.references(app)]);
    const candidates: RemoteCandidate[] = [];
    const skipped: Skipped[] = [];
    for (const [index, parsed] of images.entries()) {
      const name = parsed.ref;
      if (referenced.has(name)) {
        skipped.push({ image: name, reason: referenced.get(name)! });
        continue;
      }
      if (index < options.keep) {
        skipped.push({ image: name, reason: `among the newest ${options.keep}` });
        continue;
      }
      const key = imageKey(parsed, parsed.month);
      const image = await this.catalog.readAt(key);
      if (!image) continue; // deleted since the listing
      const created = parseGoTime(image.metadata.created_at);
      const age = now.getTime() - (Number.isNaN(created) ? gitTimeToDate(image.ref.gitTime).getTime() : created);
      const base = { image: name, key, size: image.metadata.size, created_at: image.metadata.created_at };
      if (age >= options.olderThanMs) candidates.push({ ...base, action: "delete" });
      else if (options.archiveOlderThanMs !== undefined && age >= options.archiveOlderThanMs) {
        candidates.push({ ...base, action: "archive", archive_key: archivedImageKey(key, formatLocalStamp(now)) });
      } else skipped.push({ image: name, reason: "too young" });
    }
    const staleUploads = (await store.listPendingUploads(imagesPrefix(app))).filter(
      (upload) => upload.initiated !== undefined && now.getTime() - upload.initiated.getTime() > STALE_UPLOAD_MS,
    );
    const stale_uploads = staleUploads.map((upload) => ({ key: upload.key, initiated: upload.initiated?.toISOString() }));
    if (!options.yes) {
      const bytes = candidates.filter((c) => c.action === "delete").reduce((sum, c) => sum + c.size, 0);
      return { app, dry_run: true, candidates, deleted: [], skipped, bytes_freed: bytes, stale_uploads };
    }

    const deleted: RemoteCandidate[] = [];
    for (const candidate of candidates) {
      // A promote or tag may have named it since the listing: look again right before the delete.
      const reason = (await this.references(app)).get(candidate.image);
      if (reason) {
        skipped.push({ image: candidate.image, reason: `${reason} (since the listing)` });
        continue;
      }
      const metadataKey = metadataKeyFor(candidate.key);
      if (candidate.action === "archive") {
        await store.copy(candidate.key, candidate.archive_key!);
        await store.copy(metadataKey, metadataKeyFor(candidate.archive_key!));
      }
      // Metadata first: without it the image is invisible to every reader at once.
      await store.delete(metadataKey);
      await store.delete(candidate.key);
      logger.info(`${candidate.action === "archive" ? "archived" : "deleted"} ${candidate.image} (${candidate.size} bytes)`);
      deleted.push(candidate);
    }
    for (const upload of staleUploads) {
      await store.abortUpload(upload);
      logger.info(`aborted the unfinished upload of ${upload.key}`);
    }
    const bytesFreed = deleted.filter((c) => c.action === "delete").reduce((sum, c) => sum + c.size, 0);
    const first = deleted[0];
    if (first) {
      const { gitHash, gitTime } = parseImageRef(first.image);
      await this.audit.record("cleanup", { app, gitHash, gitTime }, {
        deleted: deleted.filter((c) => c.action === "delete").map((c) => c.image),
        archived: deleted.filter((c) => c.action === "archive").map((c) => c.image),
        bytes_freed: bytesFreed,
        aborted_uploads: stale_uploads.length,
      });
    }
    return { app, dry_run: false, candidates, deleted, skipped, bytes_freed: bytesFreed, stale_uploads };
  }
}
