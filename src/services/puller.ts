/**
 * pull: parallel ranged GETs → digests (on a worker thread) → gunzip → docker load, overlapped, with no temporary file.
 * The end of the tar is held back until the whole object's checksum has matched, so the engine can
 * never finish loading an image from bad bytes.
 */
import { createGunzip } from "node:zlib";
import { IntegrityError, S3dockError } from "../errors.js";
import { sameImage, storedIdentity, type ImageIdentity } from "../domain/image-identity.js";
import { isImageRef, looksLikeVersion, parseAppName, parseEnvName, parseImageRef, parseVersion } from "../domain/names.js";
import type { ImageInfo } from "../clients/docker.js";
import { renameArchive } from "../transfer/archive-names.js";
import { BufferPool, handedOver, pooledChunks, writeChunks } from "../transfer/buffer-pool.js";
import { limitBytes } from "../transfer/byte-limit.js";
import { ThreadedDigester } from "../transfer/digest.js";
import { chainIds, type Descriptor } from "../domain/oci.js";
import { LayerLayout, LAYERS_FORMAT } from "../storage/layer-layout.js";
import { loadArchive } from "../transfer/layer-pull.js";
import { holdBack } from "../transfer/hold-back.js";
import { rangedDownload } from "../transfer/ranged-download.js";
import { AuditLog } from "./audit.js";
import { ImageCatalog, type StoredImage } from "./catalog.js";
import type { ServiceContext } from "./context.js";
import { References } from "./references.js";

export interface PullResult {
  readonly image_ref: string;
  readonly source: string;
  readonly source_type: "environment" | "tag" | "image";
  readonly skipped: boolean;
  readonly size: number;
  readonly duration_ms: number;
}

const MiB = 1024 * 1024;
/** Larger than the tar's end-of-archive blocks plus the last entry's padding, so the end stays behind. */
const HOLD_BACK_BYTES = MiB;
const RANGE_BYTES = 4 * MiB;
/** zlib inflates a whole input slice before it heeds backpressure: the slice bounds its output burst. */
const SLICE_BYTES = MiB;
/** zlib's output buffers, and the pooled buffers the tar goes to the engine in. */
const TAR_CHUNK_BYTES = MiB;
/**
 * Chunks each stage keeps waiting on the next: the decompressor starts on the next range, and the
 * engine's connection on the next tar chunk, the moment it is done with one, instead of idling until
 * the main thread comes round (measured: the tar reaches the engine ~0.2 s sooner per GB on two cores).
 */
const QUEUED = 2;
/** QUEUED with the engine's connection, and two between the decompressor and the hold-back (one filling and one held, or two held). */
const TAR_CHUNKS = QUEUED + 2;

/** What the engine reports against what the metadata records, by whatever `sameImage` compared. */
function mismatch(loaded: ImageIdentity, recorded: ImageIdentity): string {
  if (loaded.configDigest && recorded.configDigest) return `config ${loaded.configDigest}, but its metadata records ${recorded.configDigest}`;
  const describe = (identity: ImageIdentity) => `layers ${identity.diffIds.join(", ")} created ${identity.created ?? "(unknown)"}`;
  return `${describe(loaded)}, but its metadata records ${describe(recorded)}`;
}

export class Puller {
  private readonly catalog: ImageCatalog;
  private readonly references: References;
  private readonly audit: AuditLog;

  constructor(private readonly ctx: ServiceContext) {
    this.catalog = new ImageCatalog(ctx.store);
    this.references = new References(ctx.store, this.catalog);
    this.audit = new AuditLog(ctx);
  }

  /** `target` is an environment, a version (`v1.2.0`) or an image tag (`20250721-2118-f7a5a27`). */
  async resolve(app: string, target: string): Promise<{ image: StoredImage; source: string; sourceType: PullResult["source_type"] }> {
    parseAppName(app);
    if (isImageRef(`${app}:${target}`)) {
      return { image: await this.catalog.require(parseImageRef(`${app}:${target}`)), source: target, sourceType: "image" };
    }
    if (looksLikeVersion(target)) {
      const tag = await this.references.requireTag(app, parseVersion(target));
      return { image: await this.references.imageOfTag(tag), source: tag.version, sourceType: "tag" };
    }
    const resolved = await this.references.resolvePointer(app, parseEnvName(target));
    return { image: resolved.image, source: target, sourceType: "environment" };
  }

  async pull(app: string, target: string, options: { force?: boolean } = {}): Promise<PullResult> {
    const started = Date.now();
    const { image, source, sourceType } = await this.resolve(app, target);
    const { docker, logger } = this.ctx;
    const local = await docker.inspectImage(image.name);
    const recorded = storedIdentity(image.metadata);
    // An image the Go tool stored records nothing to compare: like the Go tool, its name is taken as the image.
    const alreadyLoaded = local !== undefined && sameImage(recorded, local.identity) !== false;
    if (alreadyLoaded && !options.force) {
      logger.info(`${image.name} is already in the Docker engine: skipped`);
      return this.finish(image, source, sourceType, true, started);
    }
    this.audit.prepare();
    const undoLoad = await this.undoLoad(image.name, local);
    try {
      if (image.metadata.format === LAYERS_FORMAT) await this.loadLayers(image);
      else await this.download(image);
      const loaded = await docker.inspectImage(image.name);
      if (!loaded) throw new IntegrityError(`${this.ctx.store.url(image.key)} loaded, but it does not contain ${image.name}`);
      if (sameImage(recorded, loaded.identity) === false) {
        throw new IntegrityError(`${image.name} loaded with ${mismatch(loaded.identity, recorded)}`);
      }
    } catch (error) {
      await undoLoad();
      throw error;
    }
    logger.info(`pulled ${image.name}`);
    return this.finish(image, source, sourceType, false, started);
  }

  /**
   * The layers format: the engine gets an archive without the layers it already has; should it refuse
   * that (an engine that lost a layer it seemed to have), it gets the whole image.
   */
  private async loadLayers(image: StoredImage): Promise<void> {
    const { store, docker, transfer, retryCount, logger, progress } = this.ctx;
    const layout = LayerLayout.over(store, transfer);
    const { manifest, config } = await layout.open(image.metadata);
    const layers = manifest.parsed.layers;
    const omit = await this.layersTheEngineHas(layout, layers, image.metadata.layers ?? []);
    for (const leaveOut of omit.size > 0 ? [omit, new Set<string>()] : [omit]) {
      const missing = layers.filter((layer) => !leaveOut.has(layer.digest));
      logger.info(`${image.name}: loading ${missing.length} of ${layers.length} layers${missing.length < layers.length ? " (the engine has the others)" : ""}`);
      const bar = progress.start(`pull ${image.name}`, missing.reduce((sum, layer) => sum + layer.size, 0), "bytes");
      try {
        const archive = loadArchive(store, {
          name: image.name,
          manifest: { digest: manifest.digest, bytes: manifest.bytes },
          config,
          layers,
          omit: leaveOut,
          concurrency: transfer.concurrency,
          retries: retryCount,
          onBytes: (bytes) => bar.update(bytes),
          onRetry: (message) => logger.warn(message),
        });
        await docker.loadImage(archive, { queued: QUEUED });
        return;
      } catch (error) {
        if (leaveOut.size === 0 || error instanceof IntegrityError) throw error;
        logger.warn(`${image.name}: the engine refused the image without the layers it seemed to have (${(error as Error).message}); loading all of them`);
      } finally {
        bar.stop();
      }
    }
  }

  /**
   * The blobs of the layers the engine already has. The graphdriver stores skip a layer whose chain
   * they hold; the containerd store also needs the blob itself in its content store, which s3dock
   * knows only for images it loaded from this bucket (their manifests are blobs here).
   */
  private async layersTheEngineHas(layout: LayerLayout, layers: readonly Descriptor[], diffIds: readonly string[]): Promise<Set<string>> {
    const { docker } = this.ctx;
    const [kind, local] = await Promise.all([docker.imageStore(), docker.localLayers()]);
    const chains = chainIds(diffIds);
    let held: Set<string> | undefined;
    if (kind === "containerd") {
      held = new Set();
      // A local image whose manifest is not a blob here did not come from this bucket.
      for (const digest of local.manifestDigests) for (const blob of (await layout.blobsOfManifest(digest)) ?? []) held.add(blob);
    }
    // A chain ID names the whole stack below it: the engine has every layer up to the highest chain it holds.
    const top = chains.findLastIndex((chain) => local.chainIds.has(chain));
    return new Set(layers.slice(0, top + 1).flatMap((layer) => (!held || held.has(layer.digest) ? [layer.digest] : [])));
  }

  /**
   * Notes what the engine holds before a load, and returns how to go back to it: a failed pull leaves
   * `name` where it was (on the image it named before, or on none) and removes an image it created.
   * Undoing never hides the pull's own error: a failure to undo is a warning.
   */
  private async undoLoad(name: string, before: ImageInfo | undefined): Promise<() => Promise<void>> {
    const { docker, logger } = this.ctx;
    const known = await docker.imageIds();
    return async () => {
      try {
        const after = await docker.inspectImage(name);
        if (!after || after.id === before?.id) return;
        if (before) await docker.tagImage(before.id, name);
        if (!known.has(after.id)) await docker.removeImage(after.id);
        else if (!before) await docker.removeImage(name);
        logger.info(`the failed pull was undone: ${before ? `${name} names ${before.id} again` : `${name} is not in the engine`}${known.has(after.id) ? "" : `, and ${after.id} is removed`}`);
      } catch (error) {
        logger.warn(`could not undo the failed pull of ${name} in the engine (check it: docker image inspect ${name}): ${(error as Error).message}`);
      }
    };
  }

  private async download(image: StoredImage): Promise<void> {
    const { store, progress } = this.ctx;
    const { size, sha256 } = image.metadata;
    const head = await store.head(image.key);
    if (!head) throw new IntegrityError(`${store.url(image.key)} is missing: its metadata exists but the image object does not`);
    if (head.size !== size) {
      throw new IntegrityError(`${store.url(image.key)} is ${head.size} bytes but its metadata records ${size}: refusing to load it`);
    }
    const bar = progress.start(`pull ${image.name}`, size, "bytes");
    const digester = new ThreadedDigester({ md5: !sha256, sha256: Boolean(sha256) });
    try {
      await this.stream(image, digester, (bytes) => bar.update(bytes));
    } finally {
      // The thread first: a live one keeps the process running, and terminating it cannot fail.
      await digester.close();
      bar.stop();
    }
  }

  /** Download → checksum → gunzip → docker load, overlapped; the tar's end is held back until the checksum matches. */
  private async stream(image: StoredImage, digester: ThreadedDigester, onBytes: (bytes: number) => void): Promise<void> {
    const { store, docker, transfer, retryCount, logger } = this.ctx;
    const { size, checksum, sha256 } = image.metadata;
    const verify = async () => {
      const actual = await digester.digests();
      const mismatch =
        actual.size !== size
          ? `${actual.size} bytes instead of ${size}`
          : sha256 && actual.sha256 !== sha256
            ? `sha256 ${actual.sha256} instead of ${sha256}`
            : !sha256 && actual.md5 !== checksum
              ? `md5 ${actual.md5} instead of ${checksum}`
              : undefined;
      if (mismatch) throw new IntegrityError(`${store.url(image.key)} does not match its metadata (${mismatch}): refusing to load it`);
    };
    const ranges = rangedDownload(store, image.key, {
      size,
      rangeSize: RANGE_BYTES,
      concurrency: transfer.concurrency,
      retries: retryCount,
      sharedMemory: true,
      onRetry: (message) => logger.warn(message),
    });
    const gunzip = createGunzip({ chunkSize: TAR_CHUNK_BYTES });
    // The tar is as long as the metadata records; an image pushed without that (by the Go tool) gets a ceiling.
    const recordedSize = image.metadata.uncompressed_size;
    const limit = recordedSize ?? transfer.maxImageBytesWithoutSize;
    const tooLarge = () =>
      new IntegrityError(
        recordedSize === undefined
          ? `${store.url(image.key)} decompresses to more than ${limit / MiB} MiB and its metadata records no uncompressed size: refusing to load it (raise transfer.max_image_mb_without_size if the image is genuine)`
          : `${store.url(image.key)} decompresses to more than the ${limit} bytes its metadata records: refusing to load it`,
      );
    const feeding = writeChunks(ranges, gunzip, {
      sliceSize: SLICE_BYTES,
      queued: QUEUED,
      onChunk: (data) => {
        const hashed = digester.update(data);
        onBytes(digester.size);
        return hashed;
      },
    });
    // zlib's output is copied into a few reused buffers and its own freed at once: left to the
    // collector, a gigabyte of it piles up tens of MiB deep. On the way, the archive's names are
    // replaced by the one being pulled: the bucket never decides what the engine calls an image.
    const tarChunks = renameArchive(limitBytes(handedOver(gunzip), limit, tooLarge), image.name);
    const tar = holdBack(pooledChunks(tarChunks, new BufferPool(TAR_CHUNK_BYTES, TAR_CHUNKS)), HOLD_BACK_BYTES, verify);
    // An engine that fails without reading the archive to its end leaves the decompressor full and the
    // download waiting on it: closing it stops both.
    const loading = docker.loadImage(tar, { queued: QUEUED }).catch((error: unknown) => {
      gunzip.destroy();
      throw error;
    });
    // The first failure is the cause; whatever fails after it (the engine's complaint about a cut-off archive, a
    // closed decompressor) is its echo. A stage after the decompressor that refuses the archive closes it first,
    // so its own (typed) error wins over the decompressor's abort.
    const failures: unknown[] = [];
    const note = (error: unknown) => void failures.push(error);
    await Promise.all([feeding.catch(note), loading.catch(note)]);
    if (failures.length > 0) {
      const error = failures.find((failure) => failure instanceof S3dockError) ?? failures[0];
      if (error instanceof S3dockError) throw error;
      throw new IntegrityError(`${store.url(image.key)} is not a valid image archive (${(error as Error).message}): refusing to load it`);
    }
  }

  private async finish(image: StoredImage, source: string, sourceType: PullResult["source_type"], skipped: boolean, started: number): Promise<PullResult> {
    await this.audit.record("pull", { app: image.ref.app, gitHash: image.ref.gitHash, gitTime: image.ref.gitTime }, {
      image_reference: image.name,
      s3_path: image.key,
      source,
      source_type: sourceType,
      ...(skipped ? { was_skipped: true } : {}),
    });
    return { image_ref: image.name, source, source_type: sourceType, skipped, size: image.metadata.stored_size ?? image.metadata.size, duration_ms: Date.now() - started };
  }
}
