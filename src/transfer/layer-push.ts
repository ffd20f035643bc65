/**
 * Push in the layers format: reads `docker save` once and stores each layer the bucket lacks as a
 * gzip blob, compressed on every core and uploaded while the export goes on; a layer the bucket has
 * is drained without being compressed or uploaded. Handles the three layouts `docker save` writes:
 * Docker 20.10's (`<id>/layer.tar`, uncompressed, named by a legacy ID), 25+'s OCI layout with
 * uncompressed layers (`blobs/sha256/<diff ID>`), and the containerd store's OCI layout with gzip
 * layers (`blobs/sha256/<compressed digest>`, stored as they are, without compressing them again).
 *
 * A Docker 20.10 layer cannot be told by its name before it is read, so one whose length equals that
 * of a stored layer is taken for it, drained and hashed; should the hash say otherwise, the push
 * fails with LayerGuessMissed and is run again without guessing.
 */
import { Transform, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import tar from "tar-stream";
import { IntegrityError } from "../errors.js";
import { imageConfigSchema, MEDIA_TYPES, sha256Digest, type Descriptor, type LayerDocument } from "../domain/oci.js";
import type { BlobStore } from "../storage/blob-store.js";
import { DigestTap } from "./digest.js";
import { parallelGzip, type ParallelGzipOptions } from "./parallel-gzip.js";

const LEGACY_LAYER = /^[0-9a-f]{64}\/layer\.tar$/;
const LEGACY_CONFIG = /^[0-9a-f]{64}\.json$/;
const OCI_BLOB = /^blobs\/sha256\/([0-9a-f]{64})$/;
/** Configs and manifests are small; small blobs are kept until manifest.json says what they are. */
const SMALL_BYTES = 1024 * 1024;
const MAX_KEPT_BYTES = 16 * 1024 * 1024;
/** Layer uploads still finishing (last parts, copy to its address) while the export goes on. */
const UPLOADS_IN_FLIGHT = 2;

export interface LayerPushOptions {
  /** The image's diff IDs from the engine, bottom first: the export must match them. */
  readonly diffIds: readonly string[];
  /** The layers the bucket has, by diff ID. */
  readonly stored: ReadonlyMap<string, LayerDocument>;
  readonly gzip: ParallelGzipOptions;
  /** Whether a Docker 20.10 layer may be recognised by its length (see above). */
  readonly guessBySize: boolean;
  readonly onBytes?: (exported: number) => void;
}

export interface PushedLayer {
  readonly diffId: string;
  readonly blob: Descriptor;
  /** Unknown for a gzip layer taken as it is from the containerd store. */
  readonly uncompressedSize: number | undefined;
  readonly uploaded: boolean;
}

export interface LayerPushResult {
  readonly config: Buffer;
  readonly layers: readonly PushedLayer[];
}

/** A Docker 20.10 layer taken for a stored one by its length was another: push again without guessing. */
export class LayerGuessMissed extends Error {}

type LayerOutcome = Omit<PushedLayer, "diffId"> & { readonly diffId: string | undefined };

export async function pushLayers(save: Readable, blobs: BlobStore, options: LayerPushOptions): Promise<LayerPushResult> {
  const extract = tar.extract();
  const exporting = pipeline(save, extract);
  exporting.catch(() => undefined); // awaited below; a failing entry ends the loop first
  const localDiffIds = new Set(options.diffIds);
  const unguessed = new Set(options.stored.keys());
  const outcomes = new Map<string, Promise<LayerOutcome>>();
  const small = new Map<string, Buffer>();
  let kept = 0;
  let manifest: string | undefined;
  let exported = 0;
  const inFlight: Promise<unknown>[] = [];
  /** A pass-through stage that reports the export's progress. */
  const counter = () =>
    new Transform({
      transform(part: Buffer, _encoding, callback) {
        options.onBytes?.((exported += part.length));
        callback(null, part);
      },
    });

  try {
    await readEntries();
  } catch (error) {
    // A failed upload stops reading its entry: its own error is the cause, the export's abort the echo.
    const failed = (await Promise.allSettled(inFlight)).find((settled) => settled.status === "rejected");
    throw failed ? (failed as PromiseRejectedResult).reason : error;
  }
  await exporting;
  await Promise.all(inFlight);
  return finish(manifest, small, outcomes, blobs, options.diffIds);

  async function readEntries(): Promise<void> {
  for await (const tarEntry of extract) {
    const { name, size = 0 } = tarEntry.header;
    const entry = tarEntry as unknown as Readable; // a streamx stream: Node's pipeline takes it
    const blobHex = OCI_BLOB.exec(name)?.[1];
    const named = blobHex ? `sha256:${blobHex}` : undefined;
    if (LEGACY_LAYER.test(name) || (named && localDiffIds.has(named))) {
      const stored = named ? options.stored.get(named) : undefined;
      if (stored) {
        await pipeline(entry, counter(), discard);
        outcomes.set(name, Promise.resolve({ diffId: named, blob: stored.blob, uncompressedSize: size, uploaded: false }));
        continue;
      }
      const guesses = named || !options.guessBySize ? [] : [...unguessed].filter((diffId) => options.stored.get(diffId)!.uncompressed_size === size);
      if (guesses.length > 0) {
        const tap = new DigestTap(undefined, { md5: false });
        await pipeline(entry, counter(), tap, discard);
        const diffId = `sha256:${tap.digests().sha256}`;
        if (!guesses.includes(diffId)) throw new LayerGuessMissed(`a ${size}-byte layer was taken for a stored one but is ${diffId}`);
        unguessed.delete(diffId);
        outcomes.set(name, Promise.resolve({ diffId, blob: options.stored.get(diffId)!.blob, uncompressedSize: size, uploaded: false }));
        continue;
      }
      const uncompressed = new DigestTap(undefined, { md5: false });
      const read = readThrough(entry);
      const upload = blobs.putUnaddressed(entry, [counter(), uncompressed, parallelGzip(options.gzip)], { expectedBytes: size }).then((blob): LayerOutcome => {
        const diffId = `sha256:${uncompressed.digests().sha256}`;
        if (named && diffId !== named) throw new IntegrityError(`the engine exported layer ${named} with content ${diffId}`);
        return { diffId, blob: { mediaType: MEDIA_TYPES.layerGzip, ...blob }, uncompressedSize: size, uploaded: true };
      });
      outcomes.set(name, upload);
      await settleInFlight(inFlight, upload, read);
    } else if (name === "manifest.json" || LEGACY_CONFIG.test(name) || (named && size <= SMALL_BYTES && kept + size <= MAX_KEPT_BYTES)) {
      const bytes = await readAll(entry);
      options.onBytes?.((exported += bytes.length));
      if (name === "manifest.json") manifest = bytes.toString("utf8");
      else {
        small.set(name, bytes);
        kept += bytes.length;
      }
    } else if (named) {
      // A gzip layer from the containerd store: stored as it is, under the digest its name gives.
      const has = (await blobs.size(named)) === size;
      if (has) {
        await pipeline(entry, counter(), discard);
        outcomes.set(name, Promise.resolve({ diffId: undefined, blob: { mediaType: MEDIA_TYPES.layerGzip, digest: named, size }, uncompressedSize: undefined, uploaded: false }));
        continue;
      }
      const read = readThrough(entry);
      const upload = blobs.putVerified(named, entry, [counter()], size).then((blob): LayerOutcome => ({
        diffId: undefined,
        blob: { mediaType: MEDIA_TYPES.layerGzip, ...blob },
        uncompressedSize: undefined,
        uploaded: true,
      }));
      outcomes.set(name, upload);
      await settleInFlight(inFlight, upload, read);
    } else {
      await pipeline(entry, counter(), discard);
    }
  }
  }
}

/** Reads manifest.json: which kept blob is the config, and the layers in order. */
async function finish(
  manifestText: string | undefined,
  small: Map<string, Buffer>,
  outcomes: Map<string, Promise<LayerOutcome>>,
  blobs: BlobStore,
  diffIds: readonly string[],
): Promise<LayerPushResult> {
  let entry: { Config?: unknown; Layers?: unknown } | undefined;
  try {
    entry = (JSON.parse(manifestText ?? "") as { Config?: unknown; Layers?: unknown }[])[0];
  } catch {
    // reported below
  }
  if (!entry || typeof entry.Config !== "string" || !Array.isArray(entry.Layers)) {
    throw new IntegrityError("the engine's export has no usable manifest.json");
  }
  const config = small.get(entry.Config);
  if (!config) throw new IntegrityError(`the engine's export lacks its config ${entry.Config}`);
  const configDigest = /([0-9a-f]{64})(?:\.json)?$/.exec(entry.Config)?.[1];
  if (sha256Digest(config) !== `sha256:${configDigest}`) throw new IntegrityError(`the engine's export has a config that does not match its name ${entry.Config}`);
  const parsed = imageConfigSchema.safeParse(JSON.parse(config.toString("utf8")));
  if (!parsed.success) throw new IntegrityError("the engine's export has an image config without rootfs.diff_ids");
  const exportedDiffIds = parsed.data.rootfs.diff_ids;
  if (exportedDiffIds.join() !== diffIds.join() || entry.Layers.length !== diffIds.length) {
    throw new IntegrityError("the engine exported other layers than it reports for the image");
  }
  const layers = await Promise.all(
    (entry.Layers as unknown[]).map(async (name, index): Promise<PushedLayer> => {
      const diffId = exportedDiffIds[index]!;
      if (typeof name !== "string") throw new IntegrityError("the engine's manifest.json names a layer that is not a path");
      const kept = small.get(name);
      const outcome = kept ? await storeKept(name, kept, blobs) : await outcomes.get(name);
      if (!outcome) throw new IntegrityError(`the engine's export lacks layer ${name}`);
      if (outcome.diffId !== undefined && outcome.diffId !== diffId) throw new IntegrityError(`layer ${name} is ${outcome.diffId}, not ${diffId}`);
      return { ...outcome, diffId };
    }),
  );
  return { config, layers };
}

/** A small gzip layer of the containerd store, kept in memory until manifest.json said it is a layer. */
async function storeKept(name: string, bytes: Buffer, blobs: BlobStore): Promise<LayerOutcome> {
  const digest = `sha256:${OCI_BLOB.exec(name)![1]}`;
  const has = (await blobs.size(digest)) === bytes.length;
  const blob = has ? { digest, size: bytes.length } : await blobs.putBytes(bytes);
  if (blob.digest !== digest) throw new IntegrityError(`blob ${name} does not match its name`);
  return { diffId: undefined, blob: { mediaType: MEDIA_TYPES.layerGzip, ...blob }, uncompressedSize: undefined, uploaded: !has };
}

/** Settles once the entry has been read to its end, or has failed. */
function readThrough(entry: Readable): Promise<void> {
  return new Promise((resolve) => {
    entry.once("close", () => resolve());
    entry.once("error", () => resolve());
  });
}

/** Waits for the entry to be read (or its upload to fail), and for older uploads while too many are still finishing. */
async function settleInFlight(inFlight: Promise<unknown>[], upload: Promise<unknown>, read: Promise<void>): Promise<void> {
  inFlight.push(upload);
  await Promise.race([read, upload]);
  while (inFlight.length > UPLOADS_IN_FLIGHT) await inFlight.shift();
}

async function readAll(entry: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of entry as AsyncIterable<Buffer>) parts.push(part);
  return Buffer.concat(parts);
}

/** The last stage of a pipeline that only counts or hashes. */
async function discard(source: AsyncIterable<unknown>): Promise<void> {
  const iterator = source[Symbol.asyncIterator]();
  while (!(await iterator.next()).done) {
    // discarded
  }
}
