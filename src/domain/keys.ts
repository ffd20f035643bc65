/**
 * The bucket layout, shared with the Go s3dock v0.1.10. Every object key s3dock reads or writes is
 * built and parsed here and nowhere else.
 */
import { formatImageRef, formatImageTag, type ImageRef } from "./names.js";

export const IMAGE_SUFFIX = ".tar.gz";
export const METADATA_SUFFIX = ".json";

export type AuditEvent = "push" | "tag" | "promotion" | "pull" | "deploy" | "rollback" | "cleanup";

/** Refuses any key with an empty, `.` or `..` segment or a leading slash: nothing may escape its prefix. */
function safeKey(...segments: string[]): string {
  for (const segment of segments) {
    if (segment === "" || segment === "." || segment === ".." || segment.includes("/") || segment.includes("\\")) {
      throw new Error(`unsafe object key segment ${JSON.stringify(segment)}`);
    }
  }
  return segments.join("/");
}

export const imagesPrefix = (app: string): string => `${safeKey("images", app)}/`;
export const tagsPrefix = (app: string): string => `${safeKey("tags", app)}/`;
export const pointersPrefix = (app: string): string => `${safeKey("pointers", app)}/`;
export const archivePrefix = (app: string): string => `${safeKey("archive", app)}/`;
export const ROOT_PREFIXES = ["images/", "tags/", "pointers/"] as const;

/** `{app}-{gittime}-{hash}`: the file name of an image without its suffix. */
export const imageBaseName = (ref: ImageRef): string => `${ref.app}-${formatImageTag(ref)}`;

export function imageKey(ref: ImageRef, month: string): string {
  return safeKey("images", ref.app, month, `${imageBaseName(ref)}${IMAGE_SUFFIX}`);
}

export function metadataKeyFor(imageObjectKey: string): string {
  if (!imageObjectKey.endsWith(IMAGE_SUFFIX)) throw new Error(`not an image key: ${imageObjectKey}`);
  return imageObjectKey.slice(0, -IMAGE_SUFFIX.length) + METADATA_SUFFIX;
}

export function imageKeyFor(metadataObjectKey: string): string {
  if (!metadataObjectKey.endsWith(METADATA_SUFFIX)) throw new Error(`not a metadata key: ${metadataObjectKey}`);
  return metadataObjectKey.slice(0, -METADATA_SUFFIX.length) + IMAGE_SUFFIX;
}

export interface ParsedImageKey extends ImageRef {
  readonly month: string;
  readonly ref: string;
  readonly kind: "image" | "metadata";
}

const IMAGE_FILE = /^(.+)-(\d{8}-\d{4})-([0-9a-f]{7})(\.tar\.gz|\.json)$/;

/**
 * Reads `images/{app}/{YYYYMM}/{app}-{gittime}-{hash}.(tar.gz|json)`, parsing the file name from
 * the right so app names with dashes work. Anything else is not an image key.
 */
export function parseImageKey(key: string): ParsedImageKey | undefined {
  const parts = key.split("/");
  if (parts.length !== 4 || parts[0] !== "images" || !/^\d{6}$/.test(parts[2]!)) return undefined;
  const match = IMAGE_FILE.exec(parts[3]!);
  if (!match || match[1] !== parts[1]) return undefined;
  const ref = { app: match[1]!, gitTime: match[2]!, gitHash: match[3]! };
  return {
    ...ref,
    month: parts[2]!,
    ref: formatImageRef(ref),
    kind: match[4] === IMAGE_SUFFIX ? "image" : "metadata",
  };
}

export const tagKey = (app: string, version: string): string => `${safeKey("tags", app, version)}.json`;
export const pointerKey = (app: string, env: string): string => `${safeKey("pointers", app, env)}.json`;

/** The app whose own tag or image `targetPath` is (as a tag or pointer names it), or undefined when it is neither. */
export function appOfTarget(targetType: "image" | "tag", targetPath: string): string | undefined {
  if (targetType === "image") {
    const image = parseImageKey(targetPath);
    return image?.kind === "image" ? image.app : undefined;
  }
  const app = targetPath.split("/")[1];
  return app && nameInPrefix(`tags/${app}/`, targetPath) !== undefined ? app : undefined;
}

/** The last segment of `{prefix}{name}.json`, or undefined for anything deeper or differently named. */
export function nameInPrefix(prefix: string, key: string): string | undefined {
  if (!key.startsWith(prefix) || !key.endsWith(METADATA_SUFFIX)) return undefined;
  const name = key.slice(prefix.length, -METADATA_SUFFIX.length);
  return name === "" || name.includes("/") ? undefined : name;
}

/**
 * `audit/{app}/{YYYYMM}/{YYYYMMDD-HHMM}-{event}-{hash}-{unique}.json`. The Go layout plus a unique
 * suffix, so two events in the same minute never share a key.
 */
export function auditKey(app: string, month: string, stamp: string, event: AuditEvent, hash: string, unique: string): string {
  return `${safeKey("audit", app, month, `${stamp}-${event}-${hash}-${unique}`)}.json`;
}

/**
 * Where an image pair goes when a push replaces it:
 * `archive/{app}/{YYYYMM}/{base}-archived-on-{stamp}-{unique}.tar.gz`. The Go layout plus a unique
 * suffix: two replacements within a minute never share a key.
 */
export function archivedImageKey(imageObjectKey: string, stamp: string, unique: string): string {
  const parsed = parseImageKey(imageObjectKey);
  if (!parsed || parsed.kind !== "image") throw new Error(`not an image key: ${imageObjectKey}`);
  return safeKey("archive", parsed.app, parsed.month, `${imageBaseName(parsed)}-archived-on-${stamp}-${unique}${IMAGE_SUFFIX}`);
}

/** Where `tag --force` keeps the tag it replaced: `archive/{app}/tags/{version}-archived-on-{stamp}-{unique}.json`. */
export function archivedTagKey(app: string, version: string, stamp: string, unique: string): string {
  return `${safeKey("archive", app, "tags", `${version}-archived-on-${stamp}-${unique}`)}.json`;
}

/**
 * `.s3dock/push-claims/{app}/{base}.json`: created (create-only) by the push that is about to write
 * an image name, so that a concurrent push of other content under that name is refused before it
 * writes anything. Outside images/, so no lister of either tool sees it.
 */
export const PUSH_CLAIMS_PREFIX = ".s3dock/push-claims/";
export const pushClaimKey = (ref: ImageRef): string => `${safeKey(".s3dock", "push-claims", ref.app, imageBaseName(ref))}.json`;
export const pushClaimsPrefix = (app: string): string => `${safeKey(".s3dock", "push-claims", app)}/`;

/** `.s3dock/staging/{app}/{base}-{unique}.tar.gz`: where `push --force` stores the new content before anything is archived. */
export const stagingKey = (ref: ImageRef, unique: string): string => safeKey(".s3dock", "staging", ref.app, `${imageBaseName(ref)}-${unique}${IMAGE_SUFFIX}`);
export const stagingPrefix = (app: string): string => `${safeKey(".s3dock", "staging", app)}/`;

/** The second path segment of `images/{app}/…`, `tags/{app}/…` or `pointers/{app}/…` common prefixes. */
export function appFromPrefix(commonPrefix: string): string | undefined {
  const parts = commonPrefix.split("/");
  return parts.length === 3 && parts[2] === "" && parts[1] !== "" ? parts[1] : undefined;
}

/** `images/{app}/{YYYYMM}/` → `YYYYMM`. */
export function monthFromPrefix(commonPrefix: string): string | undefined {
  const match = /^images\/[^/]+\/(\d{6})\/$/.exec(commonPrefix);
  return match ? match[1] : undefined;
}

const SHA256_DIGEST = /^sha256:([0-9a-f]{64})$/;

function digestHex(digest: string): string {
  const match = SHA256_DIGEST.exec(digest);
  if (!match) throw new Error(`not a sha256 digest: ${digest}`);
  return match[1]!;
}

/** Content-addressed blobs (compressed layers, image configs, OCI manifests), shared by every app. */
export const BLOBS_PREFIX = "blobs/sha256/";
export const blobKey = (digest: string): string => `${BLOBS_PREFIX}${digestHex(digest)}`;

/** `blobs/sha256/{hex}` → `sha256:{hex}`, or undefined for anything else under the prefix. */
export function digestFromBlobKey(key: string): string | undefined {
  const match = /^blobs\/sha256\/([0-9a-f]{64})$/.exec(key);
  return match ? `sha256:${match[1]}` : undefined;
}

/** Which stored blob holds a layer, by the layer's diff ID (its uncompressed digest, what engines report). */
export const LAYERS_PREFIX = "layers/sha256/";
export const layerKey = (diffId: string): string => `${LAYERS_PREFIX}${digestHex(diffId)}.json`;

/** Where a blob is uploaded before its digest is known; copied to its address once verified. */
export const blobUploadKey = (unique: string): string => safeKey("blobs", "uploads", unique);
export const BLOB_UPLOADS_PREFIX = "blobs/uploads/";
