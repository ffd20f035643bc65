/**
 * Reads what an image is out of a `docker save` tar, without writing anything to disk: its config
 * digest (manifest.json names the config blob), its layers' diff IDs and creation time (from the
 * config). Used to compare an image the Go tool stored, which records none of them, with a local one
 * by content rather than by compressed bytes. Handles the three layouts `docker save` writes: Docker
 * 20.10's (`<digest>.json` beside `<id>/layer.tar`), and 25+'s OCI layout (`blobs/sha256/<digest>`),
 * with uncompressed or gzip layers.
 */
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import tar from "tar-stream";
import type { ImageIdentity } from "../domain/image-identity.js";

/** manifest.json and image configs are a few KiB; anything larger is a layer (or not an image). */
const MAX_DOCUMENT_BYTES = 1024 * 1024;
/** Small layers look like configs until manifest.json says which is which: this bounds what is kept. */
const MAX_KEPT_BYTES = 16 * 1024 * 1024;
const CONFIG_NAME = /^(?:blobs\/sha256\/)?([0-9a-f]{64})(?:\.json)?$/;

/** The config digest a `docker save` manifest.json names, or undefined when it names none. */
export function configDigestOfManifest(text: string): string | undefined {
  try {
    const manifest = JSON.parse(text) as { Config?: unknown }[];
    const config = manifest[0]?.Config;
    const hex = typeof config === "string" ? CONFIG_NAME.exec(config)?.[1] : undefined;
    return hex ? `sha256:${hex}` : undefined;
  } catch {
    return undefined;
  }
}

export async function identityFromArchive(tarStream: Readable): Promise<ImageIdentity | undefined> {
  let manifest: string | undefined;
  // manifest.json comes last, so every small blob that could be the config is kept until then.
  const documents = new Map<string, Buffer>();
  let kept = 0;
  const extract = tar.extract();
  extract.on("entry", (header, body, next) => {
    const wanted = header.name === "manifest.json" || CONFIG_NAME.test(header.name);
    const size = header.size ?? 0;
    if (!wanted || size > MAX_DOCUMENT_BYTES || kept + size > MAX_KEPT_BYTES) {
      body.on("end", () => next());
      body.resume();
      return;
    }
    kept += size;
    const parts: Buffer[] = [];
    body.on("data", (part: unknown) => parts.push(part as Buffer));
    body.on("end", () => {
      if (header.name === "manifest.json") manifest = Buffer.concat(parts).toString("utf8");
      else documents.set(CONFIG_NAME.exec(header.name)![1]!, Buffer.concat(parts));
      next();
    });
  });
  await pipeline(tarStream, extract);
  const configDigest = manifest === undefined ? undefined : configDigestOfManifest(manifest);
  if (!configDigest) return undefined;
  const config = documents.get(configDigest.slice("sha256:".length));
  let parsed: { created?: unknown; rootfs?: { diff_ids?: unknown } } = {};
  try {
    parsed = config ? (JSON.parse(config.toString("utf8")) as typeof parsed) : {};
  } catch {
    // a config that is not JSON leaves only the digest to compare
  }
  const diffIds = Array.isArray(parsed.rootfs?.diff_ids) ? parsed.rootfs.diff_ids.filter((id): id is string => typeof id === "string") : [];
  return { configDigest, diffIds, created: typeof parsed.created === "string" ? parsed.created : undefined };
}
