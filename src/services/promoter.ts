/**
 * promote: points an environment at an image or a version tag. The pointer is swapped with
 * compare-and-swap (If-Match on the ETag read), so concurrent promotes never lose an update and
 * the audit event names the predecessor this swap really replaced.
 */
import { ConflictError, NotFoundError } from "../errors.js";
import { serializeDocument, type PointerDocument } from "../domain/documents.js";
import { pointerKey } from "../domain/keys.js";
import { parseAppName, parseEnvName, parseImageRef, parseVersion } from "../domain/names.js";
import { formatGoTime } from "../domain/time.js";
import { AuditLog } from "./audit.js";
import { ImageCatalog, type StoredImage } from "./catalog.js";
import type { ServiceContext } from "./context.js";
import { References, type StoredTag } from "./references.js";

export interface PromoteResult {
  readonly source: string;
  readonly environment: string;
  readonly source_type: "image" | "tag";
  readonly image_ref: string;
  readonly skipped: boolean;
  readonly previous_target: string | undefined;
  readonly attempts: number;
}

export type PromoteSource = { readonly image: string } | { readonly app: string; readonly version: string };

export class Promoter {
  private readonly catalog: ImageCatalog;
  private readonly references: References;
  private readonly audit: AuditLog;

  constructor(private readonly ctx: ServiceContext) {
    this.catalog = new ImageCatalog(ctx.store);
    this.references = new References(ctx.store, this.catalog);
    this.audit = new AuditLog(ctx);
  }

  async promote(source: PromoteSource, envInput: string, options: { retries?: number } = {}): Promise<PromoteResult> {
    const env = parseEnvName(envInput);
    const target = await this.target(source);
    const retries = options.retries ?? 0;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.swap(target, env, attempt);
      } catch (error) {
        if (!(error instanceof ConflictError) || attempt > retries) throw error;
        this.ctx.logger.info(`pointer ${env} changed while promoting; retrying (${attempt}/${retries})`);
      }
    }
  }

  private async target(source: PromoteSource): Promise<{ app: string; image: StoredImage; tag: StoredTag | undefined }> {
    if ("image" in source) {
      const ref = parseImageRef(source.image);
      return { app: ref.app, image: await this.catalog.require(ref), tag: undefined };
    }
    const app = parseAppName(source.app);
    const tag = await this.references.requireTag(app, parseVersion(source.version));
    return { app, image: await this.references.imageOfTag(tag), tag };
  }

  private async swap(target: { app: string; image: StoredImage; tag: StoredTag | undefined }, env: string, attempt: number): Promise<PromoteResult> {
    const { store, clock, user, logger, uniqueId } = this.ctx;
    const { app, image, tag } = target;
    const key = pointerKey(app, env);
    const sourceType = tag ? "tag" : "image";
    const source = tag ? `${app}:${tag.version}` : image.name;
    const targetPath = tag ? tag.key : image.key;
    const current = await this.references.readPointer(app, env);
    const base = { source, environment: env, source_type: sourceType, image_ref: image.name, attempts: attempt } as const;
    if (current?.document.target_path === targetPath) {
      logger.info(`${env} already points to ${source}: skipped`);
      return { ...base, skipped: true, previous_target: current.document.target_path };
    }
    const document: PointerDocument = {
      target_type: sourceType,
      target_path: targetPath,
      promoted_at: formatGoTime(clock.now()),
      promoted_by: user,
      git_hash: image.ref.gitHash,
      git_time: image.ref.gitTime,
      source_image: image.name,
      ...(tag ? { source_tag: tag.version } : {}),
      write_id: uniqueId(),
    };
    const text = serializeDocument(document);
    let written: { etag: string };
    try {
      written = await store.putText(key, text, current ? { ifMatch: current.etag } : { ifNoneMatch: true });
    } catch (error) {
      if (error instanceof ConflictError) {
        throw new ConflictError(`environment ${env} of ${app} was promoted by someone else while this promote ran; nothing was changed (run it again, or pass --retries)`);
      }
      throw error;
    }
    // See ImageCatalog.whyGone: a cleanup that marked the image before this write may not see it.
    const gone = await this.catalog.whyGone(image);
    if (gone) {
      await this.references.undoWrite(key, { etag: written.etag, text }, current);
      throw new NotFoundError(`${gone}: environment ${env} of ${app} was not changed`);
    }
    const previous = current?.document.target_path;
    await this.audit.record("promotion", { app, gitHash: image.ref.gitHash, gitTime: image.ref.gitTime }, {
      environment: env,
      source,
      source_type: sourceType,
      pointer_path: key,
      ...(previous ? { previous_target: previous } : {}),
    });
    logger.info(`promoted ${source} to ${env}`);
    return { ...base, skipped: false, previous_target: previous };
  }
}
