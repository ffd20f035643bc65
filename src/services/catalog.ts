/** Finds stored images. An image exists only when its metadata does: the metadata is written last. */
import { NotFoundError } from "../errors.js";
import { checkMetadataMatchesKey, imageMetadataSchema, parseDocument, type ImageMetadata } from "../domain/documents.js";
import {
  imageKey as imageKeyIn,
  imagesPrefix,
  metadataKeyFor,
  monthFromPrefix,
  parseImageKey,
  type ParsedImageKey,
} from "../domain/keys.js";
import { formatImageRef, type ImageRef } from "../domain/names.js";
import { parseGoTime } from "../domain/time.js";
import type { ObjectInfo, ObjectStore } from "../clients/object-store.js";

export interface StoredImage {
  readonly key: string;
  readonly metadataKey: string;
  readonly month: string;
  readonly ref: ImageRef;
  /** `app:gittime-hash` */
  readonly name: string;
  readonly metadata: ImageMetadata;
  readonly metadataEtag: string;
  /** The metadata document as stored, for archiving it and writing it back unchanged. */
  readonly metadataText: string;
  /** A live `cleanup remote` is deleting it: it counts as gone (a mark older than STALE_MARK_MS does not count). */
  readonly markedForDeletion: boolean;
}

/** Why an image marked by `cleanup remote` counts as gone, for messages. */
export function beingDeleted(image: StoredImage): string {
  return `image ${image.name} is being deleted by cleanup remote (since ${image.metadata.deleting!.since})`;
}

/** A mark older than this was left by a cleanup that died: readers ignore it, the next cleanup takes it over. */
export const STALE_MARK_MS = 60 * 60 * 1000;

export class ImageCatalog {
  constructor(private readonly store: ObjectStore) {}

  /** The app's month folders, newest first. */
  async months(app: string): Promise<string[]> {
    const prefixes = await this.store.listPrefixes(imagesPrefix(app));
    return prefixes.flatMap((prefix) => monthFromPrefix(prefix) ?? []).sort().reverse();
  }

  /** The image with its metadata at `key`, or undefined when the metadata is absent. */
  async readAt(key: string): Promise<StoredImage | undefined> {
    const parsed = parseImageKey(key);
    if (!parsed || parsed.kind !== "image") throw new NotFoundError(`${this.store.url(key)} is not an s3dock image key`);
    const metadataKey = metadataKeyFor(key);
    const stored = await this.store.getText(metadataKey);
    if (!stored) return undefined;
    const metadata = parseDocument(imageMetadataSchema, stored.text, this.store.url(metadataKey));
    checkMetadataMatchesKey(metadata, parsed, this.store.url(metadataKey));
    const mark = metadata.deleting;
    const markedForDeletion = mark !== undefined && !(this.store.serverNow().getTime() - parseGoTime(mark.since) > STALE_MARK_MS);
    const image = { key, metadataKey, month: parsed.month, ref: parsed, name: parsed.ref, metadata, metadataEtag: stored.etag, metadataText: stored.text };
    return { ...image, markedForDeletion };
  }

  /** Looks in every month folder (the Go tool only looks in the current one); the newest month wins. */
  async find(ref: ImageRef): Promise<StoredImage | undefined> {
    const months = await this.months(ref.app);
    const found = await Promise.all(months.map((month) => this.readAt(imageKeyIn(ref, month))));
    return found.find((image) => image !== undefined);
  }

  /** The stored image, which must not be marked for deletion by `cleanup remote`. */
  async require(ref: ImageRef): Promise<StoredImage> {
    const image = await this.find(ref);
    if (!image) {
      const name = formatImageRef(ref);
      throw new NotFoundError(`image ${name} is not in ${this.store.url("")} (push it first: s3dock push ${name})`);
    }
    if (image.markedForDeletion) throw new NotFoundError(beingDeleted(image));
    return image;
  }

  /**
   * Why the image no longer counts as stored (deleted, or marked for deletion by `cleanup remote`),
   * or undefined while it does. A command that has just written a tag or pointer naming the image
   * asks this afterwards: a cleanup that marks the image later looks for references only after
   * marking, so it sees the new one and leaves the image alone; one that marked it earlier is
   * caught here, and the command takes its write back.
   */
  async whyGone(image: StoredImage): Promise<string | undefined> {
    const now = await this.readAt(image.key);
    if (!now) return `image ${image.name} was deleted from ${this.store.url(image.key)} while this command ran`;
    return now.markedForDeletion ? beingDeleted(now) : undefined;
  }

  /** The image a tag or pointer names; missing metadata or a missing object is an error naming both. */
  async requireAt(key: string, namedBy: string): Promise<StoredImage> {
    const [image, object] = await Promise.all([this.readAt(key), this.store.head(key)]);
    if (!image || !object) {
      throw new NotFoundError(`${namedBy} points to ${this.store.url(key)}, which is ${image ? "missing its image object" : "not in the bucket (no metadata)"}`);
    }
    if (image.markedForDeletion) throw new NotFoundError(`${namedBy} points to ${beingDeleted(image)}`);
    return image;
  }

  /**
   * The app's images, newest first by tag: only those with both the object and its metadata, so a
   * push in progress or interrupted is never listed.
   */
  async list(app: string, month?: string): Promise<ParsedImageKey[]> {
    return (await this.listPairs(app, month)).map((pair) => pair.image);
  }

  /** As list, with what the listing says of each object and metadata document (size, ETag, server time). */
  async listPairs(app: string, month?: string): Promise<StoredPair[]> {
    const prefix = month ? `${imagesPrefix(app)}${month}/` : imagesPrefix(app);
    const pairs = new Map<string, { image?: ParsedImageKey; object?: ObjectInfo; metadata?: ObjectInfo }>();
    for await (const object of this.store.list(prefix)) {
      const parsed = parseImageKey(object.key);
      if (!parsed || parsed.app !== app) continue;
      const id = `${parsed.month}/${parsed.ref}`;
      const pair = pairs.get(id) ?? {};
      if (parsed.kind === "image") {
        pair.image = parsed;
        pair.object = object;
      } else pair.metadata = object;
      pairs.set(id, pair);
    }
    return [...pairs.values()]
      .filter((pair): pair is StoredPair => pair.image !== undefined && pair.metadata !== undefined)
      .sort((a, b) => (a.image.ref < b.image.ref ? 1 : a.image.ref > b.image.ref ? -1 : b.image.month.localeCompare(a.image.month)));
  }
}

export interface StoredPair {
  readonly image: ParsedImageKey;
  readonly object: ObjectInfo;
  readonly metadata: ObjectInfo;
}
