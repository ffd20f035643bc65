/**
 * tag: gives a stored image a version. Tags are write-once; `force` replaces one and then archives
 * the old document. A tag is only reported written when its image is still stored afterwards (see
 * ImageCatalog.whyGone): a cleanup deleting the image meanwhile makes the tag be taken back.
 */
import { ConflictError, NotFoundError } from "../errors.js";
import { serializeDocument, type PointerDocument } from "../domain/documents.js";
import { archivedTagKey, tagKey } from "../domain/keys.js";
import { parseImageRef, parseVersion } from "../domain/names.js";
import { formatGoTime, formatLocalStamp } from "../domain/time.js";
import { AuditLog } from "./audit.js";
import { ImageCatalog } from "./catalog.js";
import type { ServiceContext } from "./context.js";
import { References, imageNameOf } from "./references.js";

export interface TagResult {
  readonly image_ref: string;
  readonly version: string;
  readonly s3_key: string;
  readonly skipped: boolean;
  readonly replaced: string | undefined;
}

export class Tagger {
  private readonly catalog: ImageCatalog;
  private readonly references: References;
  private readonly audit: AuditLog;

  constructor(private readonly ctx: ServiceContext) {
    this.catalog = new ImageCatalog(ctx.store);
    this.references = new References(ctx.store, this.catalog);
    this.audit = new AuditLog(ctx);
  }

  async tag(reference: string, versionInput: string, options: { force?: boolean } = {}): Promise<TagResult> {
    const ref = parseImageRef(reference);
    const version = parseVersion(versionInput);
    const image = await this.catalog.require(ref);
    const { store, clock, user, logger, uniqueId } = this.ctx;
    const existing = await this.references.readTag(ref.app, version);
    const key = existing?.key ?? tagKey(ref.app, version);
    if (existing?.document.target_path === image.key) {
      logger.info(`${ref.app}:${existing.version} already points to ${image.name}: skipped`);
      return { image_ref: image.name, version: existing.version, s3_key: key, skipped: true, replaced: undefined };
    }
    if (existing && !options.force) {
      throw new ConflictError(
        `tag ${ref.app}:${existing.version} already points to ${imageNameOf(existing.document)}; versions are immutable (choose a new version, or --force to archive and replace it)`,
      );
    }
    const document: PointerDocument = {
      target_type: "image",
      target_path: image.key,
      promoted_at: formatGoTime(clock.now()),
      promoted_by: user,
      git_hash: ref.gitHash,
      git_time: ref.gitTime,
      source_image: image.name,
      write_id: uniqueId(),
    };
    const text = serializeDocument(document);
    const written = await store.putText(key, text, existing ? { ifMatch: existing.etag } : { ifNoneMatch: true });
    const gone = await this.catalog.whyGone(image);
    if (gone) {
      await this.references.undoWrite(key, { etag: written.etag, text }, existing);
      throw new NotFoundError(`${gone}: tag ${ref.app}:${existing?.version ?? version} was not changed`);
    }
    let archived: string | undefined;
    if (existing) {
      // Only now that the new tag stands: a failed tag must not leave an archive behind.
      archived = archivedTagKey(ref.app, existing.version, formatLocalStamp(clock.now()), uniqueId());
      await store.putText(archived, existing.text, { ifNoneMatch: true });
      logger.info(`archived ${ref.app}:${existing.version} (was ${imageNameOf(existing.document)}) to ${store.url(archived)}`);
    }
    const replaced = existing ? imageNameOf(existing.document) : undefined;
    const tagVersion = existing?.version ?? version;
    await this.audit.record("tag", { app: ref.app, gitHash: ref.gitHash, gitTime: ref.gitTime }, {
      image_reference: image.name,
      version: tagVersion,
      tag_path: key,
      ...(replaced ? { replaced_image: replaced, forced: true, archived_to: archived } : {}),
    });
    logger.info(`tagged ${image.name} as ${ref.app}:${tagVersion}`);
    return { image_ref: image.name, version: tagVersion, s3_key: key, skipped: false, replaced };
  }
}
