/**
 * The `layers` storage format: an image is an OCI manifest, a config and gzip layer blobs, all in
 * the shared blob store, plus `layers/sha256/{diffId}.json` documents saying which blob holds each
 * layer (engines report diff IDs; blobs are named by compressed digests). The image's metadata under
 * images/ names the manifest and is still written last: it is what makes the image visible. Beside
 * it lies a small stand-in `.tar.gz`, so the Go tool's list, current, tag and promote, which look for
 * that object, keep working; a Go host that pulls it gets a load error naming this format.
 */
import { gzipSync } from "node:zlib";
import tar from "tar-stream";
import type { ObjectStore } from "../clients/object-store.js";
import { ConflictError, IntegrityError } from "../errors.js";
import { serializeDocument, tryParseJson, type ImageMetadata } from "../domain/documents.js";
import { layerKey } from "../domain/keys.js";
import { imageConfigSchema, layerDocumentSchema, manifestJson, manifestSchema, MEDIA_TYPES, type Descriptor, type LayerDocument, type Manifest } from "../domain/oci.js";
import type { PushedLayer } from "../transfer/layer-push.js";
import type { TransferSettings } from "../domain/config.js";
import { BlobStore } from "./blob-store.js";

export const LAYERS_FORMAT = "layers";

/** What `docker load` on a Go host meets: a manifest whose config file is missing, named for the reason. */
export async function goStandIn(): Promise<Buffer> {
  const pack = tar.pack();
  const manifest = [{ Config: "stored-in-the-s3dock-layers-format-pull-it-with-s3dock-0.3-or-later.json", RepoTags: [], Layers: [] }];
  pack.entry({ name: "manifest.json", mtime: new Date(0) }, JSON.stringify(manifest));
  pack.finalize();
  const parts: Buffer[] = [];
  for await (const part of pack as AsyncIterable<Buffer>) parts.push(part);
  return gzipSync(Buffer.concat(parts), { level: 9 });
}

export interface StoredLayerImage {
  readonly manifest: { readonly digest: string; readonly bytes: Buffer; readonly parsed: Manifest };
  readonly config: { readonly digest: string; readonly bytes: Buffer };
}

export class LayerLayout {
  constructor(
    private readonly objects: ObjectStore,
    readonly blobs: BlobStore,
  ) {}

  /** Over a bucket, its blob uploads tuned by the transfer settings. */
  static over(objects: ObjectStore, transfer: Pick<TransferSettings, "partSizeBytes" | "concurrency">): LayerLayout {
    return new LayerLayout(objects, new BlobStore(objects, { partSizeBytes: transfer.partSizeBytes, concurrency: transfer.concurrency }));
  }

  /** The config and layer blobs a stored manifest names, or undefined when there is no such manifest here (or it is unreadable). */
  async blobsOfManifest(digest: string): Promise<string[] | undefined> {
    const bytes = await this.blobs.getBytes(digest).catch(() => undefined);
    const parsed = bytes ? manifestSchema.safeParse(tryParseJson(bytes.toString("utf8"))) : undefined;
    return parsed?.success ? [parsed.data.config.digest, ...parsed.data.layers.map((layer) => layer.digest)] : undefined;
  }

  /** The layers the bucket has (a document and its blob), by diff ID. */
  async storedLayers(diffIds: readonly string[]): Promise<Map<string, LayerDocument>> {
    const found = await Promise.all(
      [...new Set(diffIds)].map(async (diffId) => {
        const stored = await this.objects.getText(layerKey(diffId));
        if (!stored) return undefined;
        const parsed = layerDocumentSchema.safeParse(tryParseJson(stored.text));
        if (!parsed.success || parsed.data.diff_id !== diffId) return undefined; // unreadable: stored again
        return (await this.blobs.size(parsed.data.blob.digest)) === parsed.data.blob.size ? parsed.data : undefined;
      }),
    );
    return new Map(found.flatMap((doc) => (doc ? [[doc.diff_id, doc] as const] : [])));
  }

  /** Stores the config, the manifest and the documents of new layers; returns the manifest's descriptor. */
  async storeImage(config: Buffer, layers: readonly PushedLayer[]): Promise<Descriptor> {
    const configBlob = await this.blobs.putBytes(config);
    const manifest = Buffer.from(manifestJson({ mediaType: MEDIA_TYPES.config, ...configBlob }, layers.map((layer) => layer.blob)));
    const manifestBlob = await this.blobs.putBytes(manifest);
    await Promise.all(
      layers
        .filter((layer) => layer.uploaded)
        .map(async (layer) => {
          const document: LayerDocument = { diff_id: layer.diffId, blob: layer.blob, uncompressed_size: layer.uncompressedSize };
          // Another push may have stored the same layer with other gzip bytes: both blobs are valid, the first document stays.
          await this.objects.putText(layerKey(layer.diffId), serializeDocument(document), { ifNoneMatch: true }).catch((error: unknown) => {
            if (!(error instanceof ConflictError)) throw error;
          });
        }),
    );
    return { mediaType: MEDIA_TYPES.manifest, ...manifestBlob };
  }

  /** The manifest and config a layers image's metadata names, verified against each other and the metadata. */
  async open(metadata: ImageMetadata): Promise<StoredLayerImage> {
    const digest = metadata.manifest_digest;
    if (!digest) throw new IntegrityError(`${metadata.image_tag}: its metadata says format "layers" but names no manifest`);
    const bytes = await this.blobs.getBytes(digest);
    const parsed = manifestSchema.safeParse(tryParseJson(bytes.toString("utf8")));
    if (!parsed.success) throw new IntegrityError(`${this.blobs.url(digest)} is not an OCI image manifest`);
    const config = await this.blobs.getBytes(parsed.data.config.digest);
    const configParsed = imageConfigSchema.safeParse(tryParseJson(config.toString("utf8")));
    if (!configParsed.success) throw new IntegrityError(`${this.blobs.url(parsed.data.config.digest)} is not an image config`);
    const diffIds = configParsed.data.rootfs.diff_ids;
    if (diffIds.length !== parsed.data.layers.length || (metadata.layers && metadata.layers.join() !== diffIds.join())) {
      throw new IntegrityError(`${metadata.image_tag}: its manifest, config and metadata disagree about its layers`);
    }
    if (metadata.image_id && metadata.image_id !== parsed.data.config.digest) {
      throw new IntegrityError(`${metadata.image_tag}: its manifest names config ${parsed.data.config.digest}, its metadata ${metadata.image_id}`);
    }
    return { manifest: { digest, bytes, parsed: parsed.data }, config: { digest: parsed.data.config.digest, bytes: config } };
  }
}
