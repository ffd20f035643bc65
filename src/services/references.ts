/** Version tags and environment pointers: reading them and following them to the image they name. */
import pMap from "p-map";
import type { ObjectStore } from "../clients/object-store.js";
import { ConflictError, IntegrityError, NotFoundError } from "../errors.js";
import { parseDocument, pointerSchema, type PointerDocument } from "../domain/documents.js";
import { appOfTarget, nameInPrefix, parseImageKey, pointerKey, pointersPrefix, tagKey, tagsPrefix } from "../domain/keys.js";
import { versionSpellings } from "../domain/names.js";
import type { ImageCatalog, StoredImage } from "./catalog.js";

export interface StoredReference {
  readonly key: string;
  readonly etag: string;
  readonly document: PointerDocument;
  /** The document as stored, to archive or restore it unchanged. */
  readonly text: string;
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
/** Tag and pointer documents read at once. */
const READ_CONCURRENCY = 16;

export class References {
  constructor(
    private readonly store: ObjectStore,
    private readonly catalog: ImageCatalog,
  ) {}

  async read(key: string): Promise<StoredReference | undefined> {
    const stored = await this.store.getText(key);
    if (!stored) return undefined;
    return { key, etag: stored.etag, document: parseDocument(pointerSchema, stored.text, this.store.url(key)), text: stored.text };
  }

  /**
   * Takes back a tag or pointer write of ours (`written`): restores `previous`, or removes the
   * document when there was none. A write someone else made on top of ours since stays.
   */
  async undoWrite(key: string, written: { etag: string; text: string }, previous: StoredReference | undefined): Promise<void> {
    if (previous) {
      await this.store.putText(key, previous.text, { ifMatch: written.etag }).catch((error: unknown) => {
        if (!(error instanceof ConflictError)) throw error;
      });
      return;
    }
    if ((await this.store.getText(key))?.text === written.text) await this.store.delete(key);
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

/**
 * Which image keys the app's tags and env pointers name, read in one pass. Documents are kept by
 * ETag between scans, so scanning again costs the listings plus the documents that changed.
 */
export class ReferenceScan {
  private readonly documents = new Map<string, { etag: string; document: PointerDocument | undefined }>();

  constructor(
    private readonly store: ObjectStore,
    private readonly references: References,
    private readonly onUnreadable: (message: string) => void,
  ) {}

  /** Image key → why it must stay (the first tag or environment naming it). */
  async scan(app: string): Promise<Map<string, string>> {
    const [tags, pointers] = await Promise.all([this.read(tagsPrefix(app)), this.read(pointersPrefix(app))]);
    const imageOf = (key: string): string | undefined => {
      let document = tags.get(key);
      for (let hop = 0; document && hop < MAX_TAG_HOPS; hop++) {
        if (document.target_type === "image") return document.target_path;
        document = tags.get(document.target_path);
      }
      return undefined;
    };
    const named = new Map<string, string>();
    const name = (imageKey: string | undefined, reason: string) => {
      if (imageKey !== undefined && !named.has(imageKey)) named.set(imageKey, reason);
    };
    for (const [key, pointer] of pointers) {
      const env = nameInPrefix(pointersPrefix(app), key);
      name(pointer.target_type === "image" ? pointer.target_path : imageOf(pointer.target_path), `named by environment ${env}`);
    }
    for (const key of tags.keys()) name(imageOf(key), `named by tag ${nameInPrefix(tagsPrefix(app), key)}`);
    return named;
  }

  private async read(prefix: string): Promise<Map<string, PointerDocument>> {
    const listed: { key: string; etag: string }[] = [];
    for await (const object of this.store.list(prefix)) if (nameInPrefix(prefix, object.key) !== undefined) listed.push(object);
    await pMap(
      listed.filter(({ key, etag }) => this.documents.get(key)?.etag !== etag),
      async ({ key, etag }) => {
        try {
          const found = await this.references.read(key);
          this.documents.set(key, { etag: found?.etag ?? etag, document: found?.document });
        } catch (error) {
          if (!(error instanceof IntegrityError)) throw error;
          this.onUnreadable(error.message);
          this.documents.set(key, { etag, document: undefined });
        }
      },
      { concurrency: READ_CONCURRENCY },
    );
    const documents = new Map<string, PointerDocument>();
    for (const { key } of listed) {
      const document = this.documents.get(key)?.document;
      if (document) documents.set(key, document);
    }
    return documents;
  }
}

/** The image name a pointer or tag records, or the one its target path spells. */
export function imageNameOf(document: PointerDocument): string {
  if (document.source_image) return document.source_image;
  return parseImageKey(document.target_path)?.ref ?? document.target_path;
}
