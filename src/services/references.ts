/** Version tags and environment pointers: reading them and following them to the image they name. */
import type { ObjectStore } from "../clients/object-store.js";
import { IntegrityError, NotFoundError } from "../errors.js";
import { parseDocument, pointerSchema, type PointerDocument } from "../domain/documents.js";
import { appOfTarget, parseImageKey, pointerKey, tagKey } from "../domain/keys.js";
import { versionSpellings } from "../domain/names.js";
import type { ImageCatalog, StoredImage } from "./catalog.js";

export interface StoredReference {
  readonly key: string;
  readonly etag: string;
  readonly document: PointerDocument;
}

export interface StoredTag extends StoredReference {
  /** The version as it is spelled in the bucket (`v1.2.0`, or `1.2.0` when another tool wrote it). */
  readonly version: string;
}

export interface ResolvedPointer {
  readonly pointer: StoredReference;
  /** The tag the pointer goes through, when it was promoted from one. */
  readonly tag: StoredTag | undefined;
  readonly image: StoredImage;
}

/** Tags pointing at tags are followed this deep at most (the Go tool's current follows any number). */
const MAX_TAG_HOPS = 8;

export class References {
  constructor(
    private readonly store: ObjectStore,
    private readonly catalog: ImageCatalog,
  ) {}

  async read(key: string): Promise<StoredReference | undefined> {
    const stored = await this.store.getText(key);
    if (!stored) return undefined;
    return { key, etag: stored.etag, document: parseDocument(pointerSchema, stored.text, this.store.url(key)) };
  }

  readPointer(app: string, env: string): Promise<StoredReference | undefined> {
    return this.read(pointerKey(app, env));
  }

  /** Reads a tag by its canonical version, also finding the bare spelling (`1.2.0`) another tool may have written. */
  async readTag(app: string, canonicalVersion: string): Promise<StoredTag | undefined> {
    for (const version of versionSpellings(canonicalVersion)) {
      const found = await this.read(tagKey(app, version));
      if (found) return { ...found, version };
    }
    return undefined;
  }

  async requireTag(app: string, canonicalVersion: string): Promise<StoredTag> {
    const tag = await this.readTag(app, canonicalVersion);
    if (!tag) throw new NotFoundError(`tag ${app}:${canonicalVersion} does not exist (create it: s3dock tag ${app}:<tag> ${canonicalVersion})`);
    return tag;
  }

  /**
   * A tag or pointer of one app may only lead to that app's own tags and images: one naming another
   * app's would have its image run under this app's name, so it is refused, never followed.
   */
  private requireOwnTarget(reference: StoredReference): string {
    const app = reference.key.split("/")[1]!;
    const { target_type: type, target_path: path } = reference.document;
    if (appOfTarget(type, path) !== app) {
      throw new IntegrityError(`${this.store.url(reference.key)} points to ${this.store.url(path)}, which is not one of ${app}'s ${type}s: refusing to follow it`);
    }
    return path;
  }

  /** Follows a tag document to its image. */
  async imageOfTag(tag: StoredReference): Promise<StoredImage> {
    let current = tag;
    for (let hop = 0; hop < MAX_TAG_HOPS; hop++) {
      const type = current.document.target_type;
      const path = this.requireOwnTarget(current);
      if (type === "image") return this.catalog.requireAt(path, this.store.url(current.key));
      const next = await this.read(path);
      if (!next) throw new NotFoundError(`${this.store.url(current.key)} points to ${this.store.url(path)}, which does not exist`);
      current = next;
    }
    throw new IntegrityError(`${this.store.url(tag.key)}: tags point to tags more than ${MAX_TAG_HOPS} deep (a loop?)`);
  }

  async resolvePointer(app: string, env: string): Promise<ResolvedPointer> {
    const pointer = await this.readPointer(app, env);
    if (!pointer) {
      throw new NotFoundError(`environment ${env} of ${app} has no image (no ${this.store.url(pointerKey(app, env))}); promote one first: s3dock promote ${app}:<tag> ${env}`);
    }
    const targetPath = this.requireOwnTarget(pointer);
    if (pointer.document.target_type === "image") {
      return { pointer, tag: undefined, image: await this.catalog.requireAt(targetPath, `environment ${env} of ${app}`) };
    }
    const tagDocument = await this.read(targetPath);
    if (!tagDocument) {
      throw new NotFoundError(`environment ${env} of ${app} points to ${this.store.url(targetPath)}, which does not exist`);
    }
    const version = pointer.document.source_tag ?? targetPath.split("/").pop()!.replace(/\.json$/, "");
    return { pointer, tag: { ...tagDocument, version }, image: await this.imageOfTag(tagDocument) };
  }
}

/** The image name a pointer or tag records, or the one its target path spells. */
export function imageNameOf(document: PointerDocument): string {
  if (document.source_image) return document.source_image;
  return parseImageKey(document.target_path)?.ref ?? document.target_path;
}
