/**
 * The JSON documents in the bucket: image metadata, version tags, environment pointers and audit
 * events. Field names and value formats are the Go tool's; ours only adds fields. Unknown fields
 * written by other tools are kept on read.
 */
import { z } from "zod";
import { IntegrityError } from "../errors.js";
import { formatImageRef, type ImageRef } from "./names.js";
import { isRfc3339 } from "./time.js";

/**
 * The largest document s3dock reads. Its own are a few hundred bytes (metadata with many layers a
 * few KiB); a larger one is refused unread, so a hostile bucket cannot make a reader hold it whole.
 */
export const MAX_DOCUMENT_BYTES = 64 * 1024;

const goTime = z.string().refine(isRfc3339, "not an RFC 3339 time");
const gitTime = z.string().regex(/^\d{8}-\d{4}$/, "not YYYYMMDD-HHMM");
const gitHash = z.string().regex(/^[0-9a-f]{7,40}$/, "not a git hash");

export const imageMetadataSchema = z.looseObject({
  checksum: z.string().regex(/^[0-9a-f]{32}$/, "not an MD5 hex digest"),
  size: z.number().int().nonnegative(),
  created_at: goTime,
  git_hash: gitHash,
  git_time: gitTime,
  image_tag: z.string().min(1),
  app_name: z.string().min(1),
  // Added by this port; absent on images the Go tool pushed.
  sha256: z.string().regex(/^[0-9a-f]{64}$/).optional(),
  /** The image config's digest (the image ID of graphdriver engines; not the containerd store's ID). */
  image_id: z.string().regex(/^sha256:[0-9a-f]{64}$/).optional(),
  /** The layers' diff IDs, bottom first. */
  layers: z.array(z.string()).optional(),
  /** The image config's `created`: with the layers, what identifies the image where no engine reports its config digest. */
  image_created: z.string().optional(),
  uncompressed_size: z.number().int().nonnegative().optional(),
  compression: z.string().optional(),
  /** The ETag the object had when this metadata was written: a later mismatch means it was replaced. */
  object_etag: z.string().optional(),
  pushed_by: z.string().optional(),
  pushed_with: z.string().optional(),
  /** "layers": the image lives in the shared blob store, named by `manifest_digest`; absent: the `.tar.gz` is the image. */
  format: z.enum(["archive", "layers"]).optional(),
  manifest_digest: z.string().regex(/^sha256:[0-9a-f]{64}$/).optional(),
  /** The bytes of the image's blobs (its compressed layers, config and manifest). */
  stored_size: z.number().int().nonnegative().optional(),
  write_id: z.string().optional(),
  /** Set by `cleanup remote` while it deletes the image: readers treat the image as gone. */
  deleting: z.looseObject({ since: z.string(), by: z.string() }).optional(),
});
export type ImageMetadata = z.infer<typeof imageMetadataSchema>;

/** A version tag and an environment pointer share one shape. */
export const pointerSchema = z.looseObject({
  target_type: z.enum(["image", "tag"]),
  target_path: z.string().min(1),
  promoted_at: goTime,
  promoted_by: z.string(),
  git_hash: z.string(),
  git_time: z.string(),
  source_image: z.string(),
  source_tag: z.string().optional(),
  /**
   * Unique to each write: a writer whose answer was lost finds its own write by it, and no two
   * writes of the same content are mistaken for one another.
   */
  write_id: z.string().optional(),
});
export type PointerDocument = z.infer<typeof pointerSchema>;

/** `.s3dock/push-claims/…`: which push may write an image name now, and for which image. */
export const pushClaimSchema = z.looseObject({
  image_tag: z.string(),
  image_id: z.string(),
  layers: z.array(z.string()).optional(),
  claimed_by: z.string(),
  claimed_at: goTime,
  write_id: z.string(),
});
export type PushClaim = z.infer<typeof pushClaimSchema>;

export const auditEventSchema = z.looseObject({
  event_type: z.string(),
  timestamp: goTime,
  user: z.string(),
  app_name: z.string(),
  git_hash: z.string(),
  git_time: z.string(),
  details: z.record(z.string(), z.unknown()),
});
export type AuditEventDocument = z.infer<typeof auditEventSchema>;

/** Parses a bucket document, naming the object and the first problem when it is not what it claims to be. */
export function parseDocument<T>(schema: z.ZodType<T>, text: string, where: string): T {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new IntegrityError(`${where} is not valid JSON (${(error as Error).message})`);
  }
  const result = schema.safeParse(value);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const field = issue.path.length > 0 ? issue.path.join(".") : "document";
    throw new IntegrityError(`${where} is not a valid s3dock document: ${field}: ${issue.message}`);
  }
  return result.data;
}

/**
 * Metadata must describe the image its key names: a copy placed under another app's or another
 * image's key (to have that image loaded under this name) is refused. A longer git hash is fine
 * when it starts with the key's seven digits.
 */
export function checkMetadataMatchesKey(metadata: ImageMetadata, ref: ImageRef, where: string): void {
  const mismatch = (field: string, recorded: string, expected: string) =>
    new IntegrityError(`${where} records ${field} ${JSON.stringify(recorded)} but its key names ${JSON.stringify(expected)}: refusing to use it`);
  if (metadata.app_name !== ref.app) throw mismatch("app_name", metadata.app_name, ref.app);
  if (metadata.image_tag !== formatImageRef(ref)) throw mismatch("image_tag", metadata.image_tag, formatImageRef(ref));
  if (metadata.git_time !== ref.gitTime) throw mismatch("git_time", metadata.git_time, ref.gitTime);
  if (!metadata.git_hash.startsWith(ref.gitHash)) throw mismatch("git_hash", metadata.git_hash, ref.gitHash);
}

/** JSON, or undefined for text that is not: for readers that check the shape themselves. */
export function tryParseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Two-space indented JSON, as the Go tool writes. */
export function serializeDocument(document: object): string {
  return JSON.stringify(document, null, 2);
}
