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
import type { ObjectStore } from "../clients/object-store.js";

export interface StoredImage {
  readonly key: string;
  readonly metadataKey: string;
  readonly month: string;
  readonly ref: ImageRef;
  /** `app:gittime-hash` */
  readonly name: string;
  readonly metadata: ImageMetadata;
  readonly metadataEtag: string;
}

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
    return { key, metadataKey, month: parsed.month, ref: parsed, name: parsed.ref, metadata, metadataEtag: stored.etag };
  }

  /** Looks in every month folder (the Go tool only looks in the current one); the newest month wins. */
  async find(ref: ImageRef): Promise<StoredImage | undefined> {
    const months = await this.months(ref.app);
    const found = await Promise.all(months.map((month) => this.readAt(imageKeyIn(ref, month))));
    return found.find((image) => image !== undefined);
  }

  async require(ref: ImageRef): Promise<StoredImage> {
    const image = await this.find(ref);
    if (!image) {
      const name = formatImageRef(ref);
      throw new NotFoundError(`image ${name} is not in ${this.store.url("")} (push it first: s3dock push ${name})`);
    }
    return image;
  }

  /** The image a tag or pointer names; missing metadata or a missing object is an error naming both. */
  async requireAt(key: string, namedBy: string): Promise<StoredImage> {
    const [image, object] = await Promise.all([this.readAt(key), this.store.head(key)]);
    if (!image || !object) {
      throw new NotFoundError(`${namedBy} points to ${this.store.url(key)}, which is ${image ? "missing its image object" : "not in the bucket (no metadata)"}`);
    }
    return image;
  }

  /**
   * The app's images, newest first by tag: only those with both the object and its metadata, so a
   * push in progress or interrupted is never listed.
   */
  async list(app: string, month?: string): Promise<ParsedImageKey[]> {
    const prefix = month ? `${imagesPrefix(app)}${month}/` : imagesPrefix(app);
    const seen = new Map<string, Set<"image" | "metadata">>();
    const images = new Map<string, ParsedImageKey>();
    for await (const object of this.store.list(prefix)) {
      const parsed = parseImageKey(object.key);
      if (!parsed || parsed.app !== app) continue;
      const id = `${parsed.month}/${parsed.ref}`;
      const kinds = seen.get(id) ?? new Set();
      kinds.add(parsed.kind);
      seen.set(id, kinds);
      if (parsed.kind === "image") images.set(id, parsed);
    }
    return [...images.entries()]
      .filter(([id]) => seen.get(id)!.size === 2)
      .map(([, image]) => image)
      .sort((a, b) => (a.ref < b.ref ? 1 : a.ref > b.ref ? -1 : b.month.localeCompare(a.month)));
  }
}
