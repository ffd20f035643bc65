/**
 * What makes two images the same, across engines and image stores. The graphdriver stores (Docker
 * 20.10, and 25+ without the containerd store) name an image by its config digest; the containerd
 * image store names it by its manifest digest, which another engine never reports. What every engine
 * agrees on is the config digest (where it is known), the layers' diff IDs and the config's creation
 * time, so images are compared by those.
 */
import type { ImageMetadata } from "./documents.js";

export interface ImageIdentity {
  /** `sha256:…` of the image config, when known (graphdriver engines, `docker save`'s manifest). */
  readonly configDigest?: string | undefined;
  /** The layers' diff IDs (uncompressed digests), bottom first. */
  readonly diffIds: readonly string[];
  /** The config's `created`, as RFC 3339. */
  readonly created?: string | undefined;
}

/**
 * true: the same image; false: different images; undefined: too little is known to tell (an image
 * the Go tool stored records neither a config digest nor layers).
 */
export function sameImage(a: ImageIdentity, b: ImageIdentity): boolean | undefined {
  if (a.configDigest && b.configDigest) return a.configDigest === b.configDigest;
  if (a.diffIds.length === 0 || b.diffIds.length === 0) return undefined;
  if (a.diffIds.length !== b.diffIds.length || a.diffIds.some((id, i) => id !== b.diffIds[i])) return false;
  return a.created === undefined || b.created === undefined || sameInstant(a.created, b.created);
}

/** Engines print a config's time with up to nine fractional digits, trailing zeros dropped or not. */
function sameInstant(a: string, b: string): boolean {
  const normalized = (time: string) => {
    const match = /^(.*T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$/.exec(time);
    if (!match) return time;
    const nanos = (match[2] ?? "").padEnd(9, "0");
    const seconds = Date.parse(`${match[1]}${match[3]}`);
    return Number.isNaN(seconds) ? time : `${seconds / 1000}.${nanos}`;
  };
  return normalized(a) === normalized(b);
}

/** What a stored image's metadata says it is. */
export function storedIdentity(metadata: ImageMetadata): ImageIdentity {
  return { configDigest: metadata.image_id, diffIds: metadata.layers ?? [], created: metadata.image_created };
}
