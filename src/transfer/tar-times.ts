/**
 * Re-encodes a tar stream with every entry's modification time set to one instant and access and
 * change times dropped, so exports of the same image from the same commit carry the same times.
 * `onManifest` is given the archive's manifest.json as it passes (it names the image's config).
 */
import { PassThrough, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import tar from "tar-stream";

const DROPPED_PAX_RECORDS = new Set(["atime", "ctime", "mtime"]);
const MAX_MANIFEST_BYTES = 1024 * 1024;

export function rewriteTarTimes(input: Readable, mtime: Date, onManifest?: (text: string) => void): Readable {
  const extract = tar.extract();
  const pack = tar.pack();
  const output = new PassThrough({ highWaterMark: 1024 * 1024 });
  extract.on("entry", (header, body, next) => {
    const pax = header.pax
      ? Object.fromEntries(Object.entries(header.pax).filter(([key]) => !DROPPED_PAX_RECORDS.has(key)))
      : undefined;
    const entry = pack.entry({ ...header, mtime, pax }, (error) => next(error ?? undefined));
    if (onManifest && header.name === "manifest.json" && (header.size ?? 0) <= MAX_MANIFEST_BYTES) {
      const parts: Buffer[] = [];
      body.on("data", (part: unknown) => parts.push(part as Buffer));
      body.on("end", () => onManifest(Buffer.concat(parts).toString("utf8")));
    }
    // Not body.pipe(entry): a torn-down export destroys the entry with an error nobody would listen
    // to (an uncaught exception). The entry passes that error on to the pack, which reports it below.
    pipeline(body, entry).catch(() => undefined);
  });
  extract.on("finish", () => pack.finalize());
  pipeline(input, extract).catch((error: Error) => pack.destroy(error));
  pipeline(pack, output).catch((error: Error) => output.destroy(error));
  return output;
}
