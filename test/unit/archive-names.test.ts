/** The stage that gives a loaded archive only the pulled name, and the byte limit on decompressed output. */
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { IntegrityError } from "../../src/errors.js";
import { renameArchive } from "../../src/transfer/archive-names.js";
import { limitBytes } from "../../src/transfer/byte-limit.js";
import { makeTar, readTar, type EntryHeader } from "./tar-helpers.js";

const NAME = "shop:20250721-2118-f7a5a27";
const ID = "a".repeat(64);

/** The archive through the stage, fed in pieces of `size` bytes. */
async function renamed(archive: Buffer, size = archive.length): Promise<Buffer> {
  async function* pieces() {
    for (let i = 0; i < archive.length; i += size) yield archive.subarray(i, i + size);
  }
  const out: Buffer[] = [];
  for await (const chunk of renameArchive(pieces(), NAME)) out.push(Buffer.from(chunk));
  return Buffer.concat(out);
}

async function refusal(archive: Buffer): Promise<Error> {
  return renamed(archive).then(
    () => {
      throw new Error("not refused");
    },
    (error: Error) => error,
  );
}

const json = (value: unknown) => JSON.stringify(value);

/** A docker save archive of Docker 20.10's shape, whose names reach beyond its own. */
const hostile = (extra: { header: EntryHeader; body?: Buffer | string }[] = []) =>
  makeTar([
    { header: { name: `${"b".repeat(64)}/`, type: "directory" } },
    { header: { name: `${"b".repeat(64)}/layer.tar` }, body: randomBytes(3000) },
    { header: { name: `${ID}.json` }, body: json({ rootfs: { diff_ids: [] } }) },
    { header: { name: "manifest.json" }, body: json([{ Config: `${ID}.json`, RepoTags: ["other:latest", "postgres:16", NAME], Layers: [`${"b".repeat(64)}/layer.tar`] }]) },
    { header: { name: "repositories" }, body: json({ postgres: { "16": "b".repeat(64) }, other: { latest: "b".repeat(64) } }) },
    ...extra,
  ]);

const byName = async (archive: Buffer) => new Map((await readTar(archive)).map((entry) => [entry.header.name, entry]));

/** A raw tar header block, for entries tar-stream would not write (GNU long names, PAX sizes that disagree). */
function block(name: string, size: number, type: string, options: { sizeField?: number } = {}): Buffer {
  const header = Buffer.alloc(512);
  header.write(name, 0);
  header.write("0000644\0", 100);
  header.write("0000000\0", 108);
  header.write("0000000\0", 116);
  header.write(`${(options.sizeField ?? size).toString(8).padStart(11, "0")}\0`, 124);
  header.write("00000000000\0", 136);
  header.write(type, 156);
  header.write("ustar\0" + "00", 257);
  header.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148);
  return header;
}
const padded = (body: Buffer | string): Buffer => {
  const bytes = Buffer.from(body);
  return Buffer.concat([bytes, Buffer.alloc((512 - (bytes.length % 512)) % 512)]);
};
const paxBody = (records: Record<string, string>): Buffer =>
  Buffer.from(
    Object.entries(records)
      .map(([key, value]) => {
        const line = ` ${key}=${value}\n`;
        let length = line.length + 1;
        while (`${length}${line}`.length !== length) length++;
        return `${length}${line}`;
      })
      .join(""),
  );
const manifestBody = json([{ Config: `${ID}.json`, RepoTags: ["postgres:16"], Layers: [] }]);
const END = Buffer.alloc(1024);

describe("renameArchive", () => {
  it.each([1, 100, 511, 512, 513, 4096, 1 << 20])("names only the pulled image in manifest.json and repositories (fed in pieces of %d bytes)", async (size) => {
    const archive = await hostile();
    const entries = await byName(await renamed(archive, size));
    expect(JSON.parse(entries.get("manifest.json")!.body.toString())).toEqual([{ Config: `${ID}.json`, RepoTags: [NAME], Layers: [`${"b".repeat(64)}/layer.tar`] }]);
    expect(JSON.parse(entries.get("repositories")!.body.toString())).toEqual({ shop: { "20250721-2118-f7a5a27": "b".repeat(64) } });
    const original = await byName(archive);
    for (const name of [`${"b".repeat(64)}/layer.tar`, `${ID}.json`]) expect(entries.get(name)!.body.equals(original.get(name)!.body)).toBe(true);
    expect([...entries.keys()]).toEqual([...original.keys()]);
  });

  it("passes everything but the names files through in the source's own buffers", async () => {
    const archive = await hostile();
    const views: Buffer[] = [];
    async function* one() {
      yield archive;
    }
    for await (const chunk of renameArchive(one(), NAME)) views.push(chunk);
    const layerBytes = views.filter((view) => view.buffer === archive.buffer).reduce((sum, view) => sum + view.length, 0);
    expect(layerBytes).toBeGreaterThan(3000);
  });

  it("leaves an archive that already names only the image byte for byte alone, apart from the names files", async () => {
    const archive = await makeTar([{ header: { name: "layer.tar" }, body: randomBytes(700) }]);
    expect((await renamed(archive, 100)).equals(archive)).toBe(true);
  });

  it("renames the OCI index of Docker 25+ and the containerd image store", async () => {
    const index = { schemaVersion: 2, manifests: [{ mediaType: "application/vnd.oci.image.manifest.v1+json", digest: `sha256:${ID}`, size: 1, annotations: { "io.containerd.image.name": "docker.io/library/postgres:16", "org.opencontainers.image.ref.name": "16", other: "kept" } }] };
    const archive = await makeTar([{ header: { name: "oci-layout" }, body: '{"imageLayoutVersion":"1.0.0"}' }, { header: { name: "index.json" }, body: json(index) }]);
    const entries = await byName(await renamed(archive, 300));
    expect(JSON.parse(entries.get("index.json")!.body.toString()).manifests[0].annotations).toEqual({
      "io.containerd.image.name": `docker.io/library/${NAME}`,
      "org.opencontainers.image.ref.name": "20250721-2118-f7a5a27",
      other: "kept",
    });
  });

  it.each([
    ["./manifest.json", "a dot segment"],
    ["blobs/../manifest.json", "a parent segment"],
    ["/manifest.json", "a leading slash"],
  ])("finds manifest.json spelled %j (%s), as the engine's path cleaning does", async (name) => {
    const archive = await makeTar([{ header: { name }, body: manifestBody }]);
    const [entry] = await readTar(await renamed(archive));
    expect(entry!.header.name).toBe("manifest.json");
    expect(JSON.parse(entry!.body.toString())[0].RepoTags).toEqual([NAME]);
  });

  it("finds manifest.json named by a PAX path record, and by a GNU long name", async () => {
    const viaPax = await makeTar([{ header: { name: "innocent.json", pax: { path: "manifest.json" } }, body: manifestBody }]);
    expect(JSON.parse((await byName(await renamed(viaPax, 7))).get("manifest.json")!.body.toString())[0].RepoTags).toEqual([NAME]);
    const longName = Buffer.from("manifest.json\0");
    const viaGnu = Buffer.concat([block("././@LongLink", longName.length, "L"), padded(longName), block("innocent.json", manifestBody.length, "0"), padded(manifestBody), END]);
    expect(JSON.parse((await byName(await renamed(viaGnu, 7))).get("manifest.json")!.body.toString())[0].RepoTags).toEqual([NAME]);
  });

  it("reads an entry's size from its PAX record, so no header can hide in what the engine reads as a body", async () => {
    // The header says 0 bytes, the PAX record 1536: to the engine the hidden manifest.json is body, and the real one follows.
    const hiddenBody = json([{ Config: `${ID}.json`, RepoTags: ["hidden:1"], Layers: [] }]);
    const hidden = Buffer.concat([block("manifest.json", hiddenBody.length, "0"), padded(hiddenBody)]);
    const body = Buffer.concat([hidden, Buffer.alloc(1536 - hidden.length)]);
    const pax = paxBody({ size: String(body.length) });
    const archive = Buffer.concat([block("PaxHeader", pax.length, "x"), padded(pax), block("data.bin", 0, "0"), body, block("manifest.json", manifestBody.length, "0"), padded(manifestBody), END]);
    const out = await renamed(archive, 333);
    // The body passed unchanged; the manifest after it was renamed.
    expect(out.includes(hidden)).toBe(true);
    expect(out.toString("latin1")).not.toContain("postgres:16");
    expect(out.toString("latin1")).toContain(json([{ Config: `${ID}.json`, RepoTags: [NAME], Layers: [] }]));
  });

  it.each([
    ["a symbolic link named manifest.json", async () => makeTar([{ header: { name: "manifest.json", type: "symlink", linkname: "evil.json" } }]), /manifest.json that is not a regular file/],
    ["a hard link named repositories", async () => makeTar([{ header: { name: "x" }, body: "{}" }, { header: { name: "repositories", type: "link", linkname: "x" } }]), /repositories that is not a regular file/],
    ["a directory named index.json", async () => makeTar([{ header: { name: "index.json", type: "directory" } }]), /index.json that is not a regular file/],
    ["manifest.json written through a symbolic link", async () => makeTar([{ header: { name: "dir", type: "symlink", linkname: "." } }, { header: { name: "dir/manifest.json" }, body: manifestBody }]), /beneath a symbolic link/],
    ["two images in manifest.json", async () => makeTar([{ header: { name: "manifest.json" }, body: json([{ RepoTags: [] }, { RepoTags: ["postgres:16"] }]) }]), /holds 2 images/],
    ["two images in index.json", async () => makeTar([{ header: { name: "index.json" }, body: json({ manifests: [{}, {}] }) }]), /lists 2 images in index.json/],
    ["a manifest.json that is not JSON", async () => makeTar([{ header: { name: "manifest.json" }, body: "[{" }]), /manifest.json that is not valid JSON/],
    ["a manifest.json over 1 MiB", async () => makeTar([{ header: { name: "manifest.json" }, body: Buffer.alloc(1024 * 1024 + 1, 0x20) }]), /manifest.json of 1048577 bytes/],
    ["thousands of symbolic links", async () => Buffer.concat([...Array.from({ length: 4097 }, (_, i) => block(`l${i}`, 0, "2")), END]), /more than 4096 symbolic links/],
    ["a GNU sparse file", async () => Buffer.concat([block("manifest.json", 0, "S"), END]), /sparse/],
    ["PAX sparse records", async () => {
      const pax = paxBody({ "GNU.sparse.name": "manifest.json" });
      return Buffer.concat([block("PaxHeader", pax.length, "x"), padded(pax), block("x", 0, "0"), END]);
    }, /sparse/],
  ])("refuses %s", async (_, archive, message) => {
    const error = await refusal(await archive());
    expect(error).toBeInstanceOf(IntegrityError);
    expect(error.message).toMatch(message);
    expect(error.message).toMatch(/refusing to load it$/);
  });

  it("passes what follows the end-of-archive blocks through unread, as the engine never reads it", async () => {
    const archive = Buffer.concat([await makeTar([{ header: { name: "a" }, body: "x" }]), block("manifest.json", 2, "0"), padded("[{")]);
    expect((await renamed(archive, 100)).equals(archive)).toBe(true);
  });
});

describe("limitBytes", () => {
  async function* source(sizes: number[]) {
    for (const size of sizes) yield Buffer.alloc(size);
  }

  it("passes up to the limit and fails at the first chunk past it, without reading further", async () => {
    let read = 0;
    async function* counted() {
      for await (const chunk of source([400, 400, 400, 400])) {
        read++;
        yield chunk;
      }
    }
    const seen: number[] = [];
    const run = async () => {
      for await (const chunk of limitBytes(counted(), 1000, () => new IntegrityError("too large"))) seen.push(chunk.length);
    };
    await expect(run()).rejects.toThrow("too large");
    expect(seen).toEqual([400, 400]);
    expect(read).toBe(3);
  });

  it("lets exactly the limit through", async () => {
    let total = 0;
    for await (const chunk of limitBytes(source([500, 500]), 1000, () => new Error("no"))) total += chunk.length;
    expect(total).toBe(1000);
  });
});
