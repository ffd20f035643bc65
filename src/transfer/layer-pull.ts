/**
 * Pull in the layers format: the archive `docker load` gets, built on the fly from blobs. It carries
 * both layouts engines read: manifest.json (the graphdriver stores skip a layer whose chain they
 * already have without opening its file) and an OCI layout, oci-layout + index.json (the containerd
 * store imports whatever blobs it finds and unpacks only what it lacks). Layers the engine has are
 * left out; the rest stream from the bucket in parallel ranges, each blob checked against its digest
 * as it passes, and the archive's end is held back until every blob has matched, so the engine can
 * never finish loading bad bytes.
 */
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import tar from "tar-stream";
import type { ObjectStore } from "../clients/object-store.js";
import { IntegrityError } from "../errors.js";
import { blobKey } from "../domain/keys.js";
import { MEDIA_TYPES, type Descriptor } from "../domain/oci.js";
import { BufferPool, pooledChunks, type PooledChunk } from "./buffer-pool.js";
import { Digester } from "./digest.js";
import { holdBack } from "./hold-back.js";
import { rangedDownload } from "./ranged-download.js";

const MiB = 1024 * 1024;
const RANGE_BYTES = 4 * MiB;
const TAR_CHUNK_BYTES = MiB;
/** More than the tar's closing blocks: the end stays behind until every blob has matched. */
const HOLD_BACK_BYTES = MiB;

export interface LoadArchiveOptions {
  /** `app:tag`: the one name the engine is given. */
  readonly name: string;
  readonly manifest: { readonly digest: string; readonly bytes: Buffer };
  readonly config: { readonly digest: string; readonly bytes: Buffer };
  readonly layers: readonly Descriptor[];
  /** The layers left out (the engine has them), by blob digest. */
  readonly omit: ReadonlySet<string>;
  readonly concurrency: number;
  readonly retries: number;
  readonly onBytes?: (downloaded: number) => void;
  readonly onRetry?: (message: string) => void;
}

/** The archive as pooled chunks for `DockerEngine.loadImage`. */
export function loadArchive(store: ObjectStore, options: LoadArchiveOptions): AsyncGenerator<PooledChunk> {
  const pack = tar.pack();
  let verified = false;
  const writing = writeEntries(pack, store, options).then(() => {
    verified = true;
  });
  writing.catch((error: Error) => pack.destroy(error));
  const chunks = pooledChunks(pack as unknown as AsyncIterable<Buffer>, new BufferPool(TAR_CHUNK_BYTES, 4));
  return holdBack(chunks, HOLD_BACK_BYTES, async () => {
    await writing;
    if (!verified) throw new IntegrityError("the image's blobs were not all verified");
  });
}

async function writeEntries(pack: tar.Pack, store: ObjectStore, options: LoadArchiveOptions): Promise<void> {
  const { name, manifest, config, layers } = options;
  const path = (digest: string) => `blobs/sha256/${digest.slice("sha256:".length)}`;
  const small = (entryName: string, body: Buffer | string) =>
    new Promise<void>((resolve, reject) => pack.entry({ name: entryName, mtime: new Date(0) }, body, (error) => (error ? reject(error) : resolve())));
  await small("oci-layout", JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  await small(path(config.digest), config.bytes);
  await small(path(manifest.digest), manifest.bytes);
  let downloaded = 0;
  for (const layer of layers) {
    if (options.omit.has(layer.digest)) continue;
    const entry = pack.entry({ name: path(layer.digest), size: layer.size, mtime: new Date(0) });
    const digester = new Digester({ md5: false });
    const ranges = rangedDownload(store, blobKey(layer.digest), {
      size: layer.size,
      rangeSize: RANGE_BYTES,
      concurrency: options.concurrency,
      retries: options.retries,
      onRetry: options.onRetry,
    });
    await pipeline(
      Readable.from(
        (async function* () {
          for await (const range of ranges) {
            // A copy: the pack queues what it is given, and the range's buffer is reused at once.
            const bytes = Buffer.from(range.data);
            range.release();
            digester.update(bytes);
            options.onBytes?.((downloaded += bytes.length));
            yield bytes;
          }
          const actual = digester.digests();
          if (`sha256:${actual.sha256}` !== layer.digest || actual.size !== layer.size) {
            throw new IntegrityError(`${store.url(blobKey(layer.digest))} does not match its digest: refusing to load it`);
          }
        })(),
      ),
      entry as unknown as NodeJS.WritableStream,
    );
  }
  const [, tag] = splitName(name);
  const index = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.index,
    manifests: [
      {
        mediaType: MEDIA_TYPES.manifest,
        digest: manifest.digest,
        size: manifest.bytes.length,
        annotations: { "io.containerd.image.name": qualified(name), "org.opencontainers.image.ref.name": tag },
      },
    ],
  };
  await small("index.json", JSON.stringify(index));
  await small("manifest.json", JSON.stringify([{ Config: path(config.digest), RepoTags: [name], Layers: layers.map((layer) => path(layer.digest)) }]));
  pack.finalize();
}

function splitName(name: string): [string, string] {
  const colon = name.lastIndexOf(":");
  return [name.slice(0, colon), name.slice(colon + 1)];
}

/** The name as the containerd store spells it: `docker.io/library/app:tag` for a bare `app:tag`. */
function qualified(name: string): string {
  const [repository] = splitName(name);
  if (repository.includes("/")) return repository.split("/")[0]!.includes(".") ? name : `docker.io/${name}`;
  return `docker.io/library/${name}`;
}
