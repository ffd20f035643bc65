/**
 * Gives a `docker save` archive exactly one name on its way into `docker load`. The engine names
 * what it loads after the archive (manifest.json's RepoTags, the legacy `repositories` file, the OCI
 * index.json's name annotations), so an archive from the bucket could otherwise point any name on
 * the host (`postgres:16`, another app's tag) at its image. Those three small files are read whole
 * (at most MAX_NAMES_FILE_BYTES) and written back naming only `name`; every other byte passes
 * through as it came, in the source's own buffers, so memory stays bounded.
 *
 * The tar is read the way the engine reads it (Go's archive/tar, then path cleaning), so no entry can
 * reach the engine as one of those files unseen: GNU long names and PAX `path`/`size` records are
 * honoured; those files as links or devices, entries beneath a symbolic link, sparse entries and
 * archives of more than one image are refused.
 */
import { posix } from "node:path";
import { IntegrityError } from "../errors.js";

/** manifest.json lists one entry per image (~100 bytes a layer); a megabyte is far beyond any real one. */
export const MAX_NAMES_FILE_BYTES = 1024 * 1024;

const BLOCK = 512;
/** docker save links a layer that appears twice; more links than an image has layers is not an image. */
const MAX_SYMLINKS = 4096;
const NAMES_FILES = new Set(["manifest.json", "repositories", "index.json"]);
/** Go's isHeaderOnlyType: hard link, symbolic link, char and block device, directory, FIFO: no body, whatever the size field says. */
const HEADER_ONLY = new Set(["1", "2", "3", "4", "5", "6"]);
const REGULAR = new Set(["0", "\0"]);
/** Entries that describe the next one: a PAX extended header, a GNU long name, a GNU long link name. */
const META = new Set(["x", "L", "K"]);
/** containerd's annotation, and the OCI one (Docker writes the tag there). */
const IMAGE_NAME_ANNOTATION = "io.containerd.image.name";
const REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name";

const refuse = (why: string): IntegrityError => new IntegrityError(`the image archive ${why}: refusing to load it`);

/** A NUL-terminated string field, as Go's parseString reads it. */
function text(header: Buffer, start: number, length: number): string {
  const field = header.subarray(start, start + length);
  const nul = field.indexOf(0);
  return field.toString("utf8", 0, nul < 0 ? field.length : nul);
}

/** Octal (trimmed of spaces and NULs) or, with the high bit set, big-endian base-256: Go's parseNumeric. */
function numeric(header: Buffer, start: number, length: number): number {
  const field = header.subarray(start, start + length);
  if (field[0]! & 0x80) {
    let value = field[0]! & 0x7f;
    for (let i = 1; i < field.length; i++) value = value * 256 + field[i]!;
    return value;
  }
  const digits = field.toString("latin1").replace(/^[ \0]+|[ \0]+$/g, "").split("\0")[0]!;
  if (digits === "") return 0;
  if (!/^[0-7]+$/.test(digits)) throw refuse(`has a malformed tar header (${JSON.stringify(digits)})`);
  return parseInt(digits, 8);
}

/** The name field, with the USTAR (or STAR) prefix as Go joins it. */
function headerName(header: Buffer): string {
  const name = text(header, 0, 100);
  if (header.toString("latin1", 257, 263) !== "ustar\0") return name;
  const star = header.toString("latin1", 508, 512) === "tar\0";
  const prefix = text(header, 345, star ? 131 : 155);
  return prefix ? `${prefix}/${name}` : name;
}

/** The path an extracting engine writes to, relative to the archive's root (path.Clean, then rooted). */
const cleanPath = (name: string): string => posix.normalize(`/${name}`).replace(/^\/+|\/+$/g, "");

/** PAX records (`%d %s=%s\n`): the ones that matter here; GNU sparse records are refused. */
function paxRecords(body: Buffer): { path?: string; size?: number } {
  const records: { path?: string; size?: number } = {};
  let offset = 0;
  while (offset < body.length) {
    const space = body.indexOf(0x20, offset);
    const length = space < 0 ? NaN : Number(body.toString("latin1", offset, space));
    if (!Number.isInteger(length) || length <= space - offset || offset + length > body.length) break; // malformed: the engine refuses it
    const record = body.toString("utf8", space + 1, offset + length - 1);
    const equals = record.indexOf("=");
    const key = record.slice(0, equals);
    const value = record.slice(equals + 1);
    if (key.startsWith("GNU.sparse.")) throw refuse("holds a sparse file");
    if (key === "path") records.path = value;
    if (key === "size") records.size = Number(value);
    offset += length;
  }
  return records;
}

/** A ustar header for a regular file of `size` bytes named `name`, keeping the original's other fields. */
function regularHeader(original: Buffer, name: string, size: number): Buffer {
  const header = Buffer.from(original);
  header.fill(0, 0, 100);
  header.write(name, 0, "utf8");
  header.write(`${size.toString(8).padStart(11, "0")}\0`, 124, "latin1");
  header[156] = "0".charCodeAt(0);
  header.fill(0, 157, 257); // no link name
  header.write("ustar\0" + "00", 257, "latin1");
  header.fill(0, 345, BLOCK); // no prefix, nor GNU times or STAR trailer in its place
  header.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "latin1");
  return header;
}

const padding = (size: number): number => (BLOCK - (size % BLOCK)) % BLOCK;

function parseJson(file: string, body: Buffer): unknown {
  try {
    return JSON.parse(body.toString("utf8"));
  } catch {
    throw refuse(`has a ${file} that is not valid JSON`);
  }
}

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === "object" && value !== null && !Array.isArray(value);

/** The file's content, naming only `name` (`app:tag`). */
export function renamedFile(file: string, body: Buffer, name: string): Buffer {
  const colon = name.lastIndexOf(":");
  const repository = name.slice(0, colon);
  const tag = name.slice(colon + 1);
  const value = parseJson(file, body);
  if (file === "manifest.json") {
    if (!Array.isArray(value) || !value.every(isObject)) throw refuse("has a manifest.json that is not a list of images");
    if (value.length > 1) throw refuse(`holds ${value.length} images (an s3dock image archive holds one)`);
    return Buffer.from(JSON.stringify(value.map((image) => ({ ...image, RepoTags: [name] }))));
  }
  if (file === "repositories") {
    if (!isObject(value)) throw refuse("has a repositories file that is not an object");
    const id = Object.values(value).flatMap((tags) => (isObject(tags) ? Object.values(tags) : [])).find((v) => typeof v === "string");
    return Buffer.from(JSON.stringify(id === undefined ? {} : { [repository]: { [tag]: id } }));
  }
  if (!isObject(value) || !Array.isArray(value.manifests) || !value.manifests.every(isObject)) throw refuse("has an index.json without a list of manifests");
  if (value.manifests.length > 1) throw refuse(`lists ${value.manifests.length} images in index.json (an s3dock image archive holds one)`);
  const manifests = value.manifests.map((descriptor: Record<string, unknown>) => {
    if (!isObject(descriptor.annotations)) return descriptor;
    const annotations = { ...descriptor.annotations };
    if (IMAGE_NAME_ANNOTATION in annotations) annotations[IMAGE_NAME_ANNOTATION] = `docker.io/library/${name}`;
    if (REF_NAME_ANNOTATION in annotations) annotations[REF_NAME_ANNOTATION] = tag;
    return { ...descriptor, annotations };
  });
  return Buffer.from(JSON.stringify({ ...value, manifests }));
}

type State =
  | { readonly kind: "header" }
  /** Body and padding passing through unchanged. */
  | { readonly kind: "pass"; remaining: number }
  /** A meta entry or a names file, read whole: `size` body bytes, then `skip` bytes of padding. */
  | { readonly kind: "capture"; readonly header: Buffer; readonly file: string | undefined; readonly size: number; readonly parts: Buffer[]; filled: number; skip: number }
  /** Past the end-of-archive block: the engine reads no further, so neither do we. */
  | { readonly kind: "end" };

/** The archive, as chunks, with only `name` for names. Yields views of the source's chunks: copy or use each before asking for the next. */
export async function* renameArchive(source: AsyncIterable<Buffer>, name: string): AsyncGenerator<Buffer> {
  let state: State = { kind: "header" };
  /** A header split across chunks, gathered here. */
  const partial = Buffer.alloc(BLOCK);
  let partialFilled = 0;
  /** Meta entries (raw bytes, padding included) waiting for the entry they describe. */
  let pendingMeta: Buffer[] = [];
  let pax: { path?: string; size?: number } = {};
  let longName: string | undefined;
  /** Symbolic links met so far: nothing may be extracted through one. */
  const symlinks = new Set<string>();

  /**
   * What a header leads to. Meta entries are captured until the entry they describe; that entry
   * lets them go on before it, unless it is a names file, which gets a plain header of its own.
   */
  const decide = (header: Buffer): { next: State; releasePending: boolean } => {
    if (header.every((byte) => byte === 0)) return { next: { kind: "end" }, releasePending: true };
    const type = String.fromCharCode(header[156]!);
    if (META.has(type)) {
      const size = numeric(header, 124, 12);
      if (size > MAX_NAMES_FILE_BYTES) throw refuse(`has a tar extended header of ${size} bytes`);
      return { next: { kind: "capture", header, file: undefined, size, parts: [], filled: 0, skip: padding(size) }, releasePending: false };
    }
    if (type === "S") throw refuse("holds a sparse file");
    // Go's archive/tar: a GNU long name beats a PAX path, which beats the header's own; PAX size beats the header's.
    const path = cleanPath(longName || (pax.path ?? headerName(header)));
    const size = HEADER_ONLY.has(type) ? 0 : type === "g" ? numeric(header, 124, 12) : (pax.size ?? numeric(header, 124, 12));
    if (!Number.isSafeInteger(size) || size < 0) throw refuse("has a malformed tar header");
    pax = {};
    longName = undefined;
    for (let dir = posix.dirname(path); dir !== "." && dir !== "/"; dir = posix.dirname(dir)) {
      if (symlinks.has(dir)) throw refuse(`has an entry beneath a symbolic link (${path})`);
    }
    if (type === "2") {
      if (symlinks.size >= MAX_SYMLINKS) throw refuse(`has more than ${MAX_SYMLINKS} symbolic links`);
      symlinks.add(path);
    }
    if (NAMES_FILES.has(path)) {
      if (!REGULAR.has(type)) throw refuse(`has a ${path} that is not a regular file`);
      if (size > MAX_NAMES_FILE_BYTES) throw refuse(`has a ${path} of ${size} bytes`);
      pendingMeta = [];
      return { next: { kind: "capture", header, file: path, size, parts: [], filled: 0, skip: padding(size) }, releasePending: false };
    }
    return { next: { kind: "pass", remaining: size + padding(size) }, releasePending: true };
  };

  const finishCapture = (capture: Extract<State, { kind: "capture" }>): Buffer[] => {
    const body = Buffer.concat(capture.parts);
    if (capture.file) {
      const content = renamedFile(capture.file, body, name);
      return [regularHeader(capture.header, capture.file, content.length), content, Buffer.alloc(padding(content.length))];
    }
    const type = String.fromCharCode(capture.header[156]!);
    if (type === "x") pax = paxRecords(body);
    else if (type === "L") longName = text(body, 0, body.length);
    pendingMeta.push(capture.header, body, Buffer.alloc(padding(capture.size)));
    return [];
  };

  for await (const chunk of source) {
    let offset = 0;
    /** Where the bytes that pass through unchanged began in this chunk. */
    let passFrom = 0;
    const flush = function* (to: number): Generator<Buffer> {
      if (to > passFrom) yield chunk.subarray(passFrom, to);
      passFrom = to;
    };
    // A capture with nothing left to read (an empty file) completes without waiting for bytes.
    const captured = () => state.kind === "capture" && state.filled === state.size && state.skip === 0;
    while (offset < chunk.length || captured()) {
      if (state.kind === "end") {
        offset = chunk.length;
      } else if (state.kind === "pass") {
        const take = Math.min(state.remaining, chunk.length - offset);
        state.remaining -= take;
        offset += take;
        if (state.remaining === 0) state = { kind: "header" };
      } else if (state.kind === "header" && partialFilled === 0 && chunk.length - offset >= BLOCK) {
        // A whole header in this chunk: unless it is held back, it passes on with the bytes around it.
        const { next, releasePending } = decide(Buffer.from(chunk.subarray(offset, offset + BLOCK)));
        if (next.kind === "capture" || (releasePending && pendingMeta.length > 0)) yield* flush(offset);
        if (releasePending) yield* pendingMeta.splice(0);
        offset += BLOCK;
        if (next.kind === "capture") passFrom = offset;
        state = next;
      } else if (state.kind === "header") {
        // A header split across chunks: gathered, then passed on as a copy.
        if (partialFilled === 0) yield* flush(offset);
        const copied = chunk.copy(partial, partialFilled, offset, Math.min(chunk.length, offset + BLOCK - partialFilled));
        partialFilled += copied;
        offset += copied;
        passFrom = offset;
        if (partialFilled === BLOCK) {
          partialFilled = 0;
          const header = Buffer.from(partial);
          const { next, releasePending } = decide(header);
          if (releasePending) yield* pendingMeta.splice(0);
          if (next.kind !== "capture") yield header;
          state = next;
        }
      } else {
        const capture = state;
        if (capture.filled < capture.size) {
          const take = Math.min(capture.size - capture.filled, chunk.length - offset);
          capture.parts.push(Buffer.from(chunk.subarray(offset, offset + take)));
          capture.filled += take;
          offset += take;
        } else {
          const skip = Math.min(capture.skip, chunk.length - offset);
          capture.skip -= skip;
          offset += skip;
        }
        passFrom = offset;
        if (capture.filled === capture.size && capture.skip === 0) {
          yield* finishCapture(capture);
          state = { kind: "header" };
        }
      }
    }
    yield* flush(offset);
  }
  // A cut-off archive goes on as it came: the checksum, or else the engine, reports it.
  yield* pendingMeta;
  if (state.kind === "capture") {
    yield state.header;
    yield* state.parts;
  }
  if (partialFilled > 0) yield Buffer.from(partial.subarray(0, partialFilled));
}
