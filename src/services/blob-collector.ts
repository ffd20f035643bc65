/**
 * Garbage collection of the layers format's blobs, bucket-wide (blobs are shared by every app). Mark:
 * every image metadata under images/ and archive/ names a manifest, which names a config and layers;
 * every live push claim names the layers (by diff ID) of a push under way. Sweep: a blob nothing
 * marks and older than the grace period (by the bucket's clock) goes, after the layer documents that
 * point at it; so do staging uploads older than the grace period. Any metadata that cannot be read
 * stops the sweep: a blob is never deleted on a guess. Claims are read again right before deleting.
 */
import pMap from "p-map";
import { blobKey, BLOB_UPLOADS_PREFIX, BLOBS_PREFIX, digestFromBlobKey, LAYERS_PREFIX, layerKey, PUSH_CLAIMS_PREFIX } from "../domain/keys.js";
import { tryParseJson } from "../domain/documents.js";
import { layerDocumentSchema } from "../domain/oci.js";
import { OperationError } from "../errors.js";
import { LayerLayout } from "../storage/layer-layout.js";
import type { ServiceContext } from "./context.js";

export const DEFAULT_BLOB_GRACE_MS = 24 * 60 * 60 * 1000;
const READ_CONCURRENCY = 16;

export interface BlobCollection {
  /** Blobs and staging uploads nothing needs, older than the grace period. */
  readonly candidates: number;
  readonly deleted: number;
  readonly bytes_freed: number;
}

export class BlobCollector {
  private readonly layout: LayerLayout;

  constructor(private readonly ctx: ServiceContext) {
    this.layout = LayerLayout.over(ctx.store, ctx.transfer);
  }

  async collect(options: { yes: boolean; graceMs: number }): Promise<BlobCollection> {
    const { store, logger } = this.ctx;
    const now = store.serverNow().getTime();
    const old = (modified: Date | undefined) => modified !== undefined && now - modified.getTime() > options.graceMs;
    const garbage = new Map<string, number>(); // key → size
    const stored = new Map<string, number>();
    for await (const object of store.list(BLOBS_PREFIX)) {
      const digest = digestFromBlobKey(object.key);
      if (digest && old(object.lastModified)) stored.set(digest, object.size);
    }
    for await (const object of store.list(BLOB_UPLOADS_PREFIX)) if (old(object.lastModified)) garbage.set(object.key, object.size);
    if (stored.size === 0 && garbage.size === 0) return { candidates: 0, deleted: 0, bytes_freed: 0 };

    const layerDocs = await this.layerDocuments();
    const marked = await this.marked();
    for (const digest of await this.claimed(layerDocs)) marked.add(digest);
    for (const [digest, size] of stored) if (!marked.has(digest)) garbage.set(blobKey(digest), size);
    const candidates = garbage.size;
    const bytes = [...garbage.values()].reduce((sum, size) => sum + size, 0);
    if (!options.yes) return { candidates, deleted: 0, bytes_freed: bytes };

    // A push that claimed its image since the mark relies on the layers it found: read the claims again.
    for (const digest of await this.claimed(layerDocs)) garbage.delete(blobKey(digest));
    const doomed = new Set([...garbage.keys()].flatMap((key) => digestFromBlobKey(key) ?? []));
    await pMap(
      [...layerDocs].filter(([, digest]) => doomed.has(digest)),
      ([diffId]) => store.delete(layerKey(diffId)),
      { concurrency: READ_CONCURRENCY },
    );
    await pMap(garbage.keys(), (key) => store.delete(key), { concurrency: READ_CONCURRENCY });
    const freed = [...garbage.values()].reduce((sum, size) => sum + size, 0);
    if (garbage.size > 0) logger.info(`deleted ${garbage.size} blobs nothing needs (${freed} bytes)`);
    return { candidates, deleted: garbage.size, bytes_freed: freed };
  }

  /** diff ID → blob digest, for every layer document. */
  private async layerDocuments(): Promise<Map<string, string>> {
    const keys: string[] = [];
    for await (const object of this.ctx.store.list(LAYERS_PREFIX)) keys.push(object.key);
    const entries = await pMap(
      keys,
      async (key) => {
        const stored = await this.ctx.store.getText(key);
        const parsed = stored ? layerDocumentSchema.safeParse(tryParseJson(stored.text)) : undefined;
        return parsed?.success ? [[parsed.data.diff_id, parsed.data.blob.digest] as const] : [];
      },
      { concurrency: READ_CONCURRENCY },
    );
    return new Map(entries.flat());
  }

  /** Every blob an image's metadata (stored or archived, any app) needs. */
  private async marked(): Promise<Set<string>> {
    const { store } = this.ctx;
    const marked = new Set<string>();
    const manifests = new Set<string>();
    const documents: string[] = [];
    for (const prefix of ["images/", "archive/"]) {
      for await (const object of store.list(prefix)) if (object.key.endsWith(".json")) documents.push(object.key);
    }
    await pMap(
      documents,
      async (key) => {
        const stored = await store.getText(key);
        if (!stored) return; // deleted meanwhile: it needs nothing
        const metadata = tryParseJson(stored.text) as { manifest_digest?: unknown; format?: unknown } | undefined;
        if (metadata === undefined) throw new OperationError(`${store.url(key)} is not readable JSON: no blob was deleted (fix or remove it, then run cleanup again)`);
        if (typeof metadata.manifest_digest === "string") manifests.add(metadata.manifest_digest);
      },
      { concurrency: READ_CONCURRENCY },
    );
    await pMap(
      manifests,
      async (digest) => {
        marked.add(digest);
        for (const blob of (await this.layout.blobsOfManifest(digest)) ?? []) marked.add(blob); // a missing manifest needs nothing more
      },
      { concurrency: READ_CONCURRENCY },
    );
    return marked;
  }

  /** The blobs of the layers that live push claims name. */
  private async claimed(layerDocs: Map<string, string>): Promise<Set<string>> {
    const { store } = this.ctx;
    const digests = new Set<string>();
    for await (const object of store.list(PUSH_CLAIMS_PREFIX)) {
      const stored = await store.getText(object.key);
      const claim = stored ? (tryParseJson(stored.text) as { layers?: unknown } | undefined) : undefined;
      const layers = Array.isArray(claim?.layers) ? claim.layers : [];
      for (const diffId of layers) {
        const digest = typeof diffId === "string" ? layerDocs.get(diffId) : undefined;
        if (digest) digests.add(digest);
      }
    }
    return digests;
  }
}
