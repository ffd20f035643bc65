/** Builds and reads small tar archives in memory for the unit tests. */
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import tar, { type Header } from "tar-stream";

export interface TarEntry {
  readonly header: Header;
  readonly body: Buffer;
}

/** What pack.entry takes: a partial header with at least a name. */
export type EntryHeader = Partial<Header> & Pick<Header, "name">;

export async function makeTar(entries: readonly { header: EntryHeader; body?: Buffer | string }[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on("data", (chunk: unknown) => chunks.push(chunk as Buffer));
  const done = new Promise<void>((resolve, reject) => {
    pack.on("end", resolve);
    pack.on("error", reject);
  });
  for (const entry of entries) {
    await new Promise<void>((resolve, reject) => {
      const body = entry.body === undefined ? undefined : Buffer.from(entry.body);
      const callback = (error?: Error | null) => (error ? reject(error) : resolve());
      if (body === undefined) pack.entry(entry.header, callback);
      else pack.entry(entry.header, body, callback);
    });
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

export async function readTar(input: Readable | Buffer): Promise<TarEntry[]> {
  const extract = tar.extract();
  const entries: TarEntry[] = [];
  extract.on("entry", (header, stream, next) => {
    const parts: Buffer[] = [];
    stream.on("data", (part: unknown) => parts.push(part as Buffer));
    stream.on("end", () => {
      entries.push({ header, body: Buffer.concat(parts) });
      next();
    });
  });
  // pipeline, not pipe: a source that fails or stops short must fail the read, as a real engine's load does.
  await pipeline(Buffer.isBuffer(input) ? Readable.from([input]) : input, extract);
  return entries;
}

export async function collect(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of stream) parts.push(Buffer.from(part as Buffer));
  return Buffer.concat(parts);
}
