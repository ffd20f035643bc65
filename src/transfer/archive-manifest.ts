/**
 * Reads the image ID out of a `docker save` tar (its manifest.json names the config blob, whose
 * digest is the ID) without writing anything to disk. Used to compare an image the Go tool stored,
 * which records no ID, with a local one by content rather than by compressed bytes.
 */
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import tar from "tar-stream";

const MAX_MANIFEST_BYTES = 1024 * 1024;

export async function imageIdFromArchive(tarStream: Readable): Promise<string | undefined> {
  let imageId: string | undefined;
  const extract = tar.extract();
  extract.on("entry", (header, body, next) => {
    if (header.name !== "manifest.json" || (header.size ?? 0) > MAX_MANIFEST_BYTES) {
      body.on("end", () => next());
      body.resume();
      return;
    }
    const parts: Buffer[] = [];
    body.on("data", (part: unknown) => parts.push(part as Buffer));
    body.on("end", () => {
      try {
        const manifest = JSON.parse(Buffer.concat(parts).toString("utf8")) as { Config?: string }[];
        const config = manifest[0]?.Config ?? "";
        const hex = /([0-9a-f]{64})(?:\.json)?$/.exec(config)?.[1];
        imageId = hex ? `sha256:${hex}` : undefined;
      } catch {
        imageId = undefined;
      }
      next();
    });
  });
  await pipeline(tarStream, extract);
  return imageId;
}
