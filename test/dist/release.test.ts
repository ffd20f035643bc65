/**
 * The release files make dist writes, checked as files: the checksums, each executable's format and
 * architecture, and the injected bundle where each platform's Node looks for it. The macOS and
 * Windows executables cannot run here (Debian's Wine 8 cannot start Node 24 at all), so for them
 * this structure is what is verified; the Linux ones also run (run.test.ts).
 */
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { beforeAll, describe, expect, it } from "vitest";
import { BUNDLE, RELEASE, VERSION, releaseFile } from "./helpers.js";

const EXECUTABLES = ["s3dock-darwin-arm64", "s3dock-darwin-x64", "s3dock-linux-arm64", "s3dock-linux-x64", "s3dock-win-x64.exe"];
const FUSE = "NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2";
/** The first four bytes of a SEA preparation blob (Node's kMagic, little-endian). */
const BLOB_MAGIC = Buffer.from([0x20, 0xda, 0x43, 0x01]);

let bundle: Buffer;
beforeAll(() => {
  bundle = readFileSync(BUNDLE);
});

/** The blob at `offset` of `file`: it must start with the magic and hold the whole bundle. */
function expectBlobAt(file: Buffer, offset: number, size: number) {
  const blob = file.subarray(offset, offset + size);
  expect(blob.subarray(0, 4).equals(BLOB_MAGIC)).toBe(true);
  expect(blob.indexOf(bundle)).toBeGreaterThan(0);
}

/** The fuse postject flips to say "a blob is injected": present once, set. */
function expectFuseSet(file: Buffer) {
  const at = file.indexOf(FUSE);
  expect(at).toBeGreaterThan(0);
  expect(file.indexOf(FUSE, at + 1)).toBe(-1);
  expect(file.toString("latin1", at + FUSE.length, at + FUSE.length + 2)).toBe(":1");
}

describe("release files", () => {
  it("are the five executables, the npm package and SHA256SUMS, which sha256sum -c accepts", () => {
    expect(readdirSync(RELEASE).sort()).toEqual(["SHA256SUMS", `s3dock-${VERSION}.tgz`, ...EXECUTABLES].sort());
    const sums = readFileSync(releaseFile("SHA256SUMS"), "utf8");
    expect(sums.trim().split("\n").map((line) => line.split("  ")[1]).sort()).toEqual([`s3dock-${VERSION}.tgz`, ...EXECUTABLES].sort());
    const checked = execFileSync("sha256sum", ["--check", "--strict", "SHA256SUMS"], { cwd: RELEASE, encoding: "utf8" });
    expect(checked.trim().split("\n").filter((line) => line.endsWith(": OK"))).toHaveLength(6);
  });

  it.each([
    ["s3dock-linux-x64", /^ELF 64-bit LSB executable, x86-64,.* stripped$/],
    ["s3dock-linux-arm64", /^ELF 64-bit LSB executable, ARM aarch64,.* stripped$/],
    ["s3dock-darwin-x64", /^Mach-O 64-bit x86_64 executable/],
    ["s3dock-darwin-arm64", /^Mach-O 64-bit arm64 executable/],
    ["s3dock-win-x64.exe", /^PE32\+ executable \(console\) x86-64, for MS Windows/],
  ])("%s is an executable for its platform, with the blob injected and the fuse set", (name, format) => {
    expect(execFileSync("file", ["-b", releaseFile(name)], { encoding: "utf8" }).trim()).toMatch(format);
    const file = readFileSync(releaseFile(name));
    expectFuseSet(file);
    expect(file.indexOf(bundle)).toBeGreaterThan(0);
  });
});

describe.each(["s3dock-darwin-x64", "s3dock-darwin-arm64"])("%s (Mach-O)", (name) => {
  let headers: string;
  let file: Buffer;
  beforeAll(() => {
    headers = execFileSync("llvm-objdump", ["--macho", "--private-headers", releaseFile(name)], { encoding: "utf8", maxBuffer: 16 << 20 });
    file = readFileSync(releaseFile(name));
  });

  /** Each segment's name, file offset and size, in load-command order. */
  const segments = () =>
    [...headers.matchAll(/cmd LC_SEGMENT_64\n\s+cmdsize \d+\n\s+segname (\S+)\n\s+vmaddr \S+\n\s+vmsize \S+\n\s+fileoff (\d+)\n\s+filesize (\d+)/g)].map(
      ([, segname, fileoff, filesize]) => ({ segname, fileoff: Number(fileoff), filesize: Number(filesize) }),
    );

  it("has the blob in section NODE_SEA,__NODE_SEA_BLOB, where Node looks for it", () => {
    const section = /sectname __NODE_SEA_BLOB\n\s+segname NODE_SEA\n\s+addr \S+\n\s+size (0x[0-9a-f]+)\n\s+offset (\d+)/.exec(headers);
    expect(section).not.toBeNull();
    expectBlobAt(file, Number(section![2]), Number(section![1]));
  });

  it("has no code signature left, and __LINKEDIT last, ending the file, so `codesign --sign -` can add one", () => {
    expect(headers).not.toContain("LC_CODE_SIGNATURE");
    const last = segments().at(-1)!;
    expect(last.segname).toBe("__LINKEDIT");
    expect(last.fileoff + last.filesize).toBe(file.length);
  });

  it("keeps what dyld needs to load it: chained fixups, the export trie, the runtime's dylibs", () => {
    for (const command of ["LC_DYLD_CHAINED_FIXUPS", "LC_DYLD_EXPORTS_TRIE", "LC_MAIN", "LC_LOAD_DYLINKER"]) expect(headers).toContain(command);
    expect(headers).toMatch(/name \/usr\/lib\/libSystem\.B\.dylib/);
  });
});

describe("s3dock-win-x64.exe (PE)", () => {
  let file: Buffer;
  beforeAll(() => {
    file = readFileSync(releaseFile("s3dock-win-x64.exe"));
  });

  it("has no Authenticode signature left (a broken one is worse than none)", () => {
    const headers = execFileSync("llvm-readobj", ["--file-headers", releaseFile("s3dock-win-x64.exe")], { encoding: "utf8" });
    expect(headers).toMatch(/CertificateTableRVA: 0x0\n\s+CertificateTableSize: 0x0/);
  });

  it("has the blob as the resource NODE_SEA_BLOB, where Node looks for it", () => {
    const resource = findPEResource(file, "NODE_SEA_BLOB");
    expect(resource).toBeDefined();
    expectBlobAt(file, resource!.offset, resource!.size);
  });
});

/**
 * Walks a PE file's resource directory (type → name → language) to the data of the resource with
 * this name, whatever its type; returns its file offset and size.
 */
function findPEResource(file: Buffer, name: string): { offset: number; size: number } | undefined {
  const pe = file.readUInt32LE(0x3c);
  const sections = pe + 24 + file.readUInt16LE(pe + 20);
  const rsrcRva = file.readUInt32LE(pe + 24 + 112 + 2 * 8); // data directory 2: resources
  const sectionOf = (rva: number) => {
    for (let i = 0; i < file.readUInt16LE(pe + 6); i++) {
      const header = sections + 40 * i;
      const virtualAddress = file.readUInt32LE(header + 12);
      if (rva >= virtualAddress && rva < virtualAddress + file.readUInt32LE(header + 8)) return rva - virtualAddress + file.readUInt32LE(header + 20);
    }
    throw new Error(`RVA ${rva} is in no section`);
  };
  const base = sectionOf(rsrcRva);
  const entries = (directory: number) => {
    const count = file.readUInt16LE(directory + 12) + file.readUInt16LE(directory + 14);
    return Array.from({ length: count }, (_, i) => {
      const entry = directory + 16 + 8 * i;
      const id = file.readUInt32LE(entry);
      const target = file.readUInt32LE(entry + 4);
      const label = id & 0x80000000 ? file.toString("utf16le", base + (id & 0x7fffffff) + 2, base + (id & 0x7fffffff) + 2 + 2 * file.readUInt16LE(base + (id & 0x7fffffff))) : id;
      return { label, offset: base + (target & 0x7fffffff), isDirectory: (target & 0x80000000) !== 0 };
    });
  };
  for (const type of entries(base).filter((entry) => entry.isDirectory)) {
    for (const named of entries(type.offset).filter((entry) => entry.label === name && entry.isDirectory)) {
      const data = entries(named.offset)[0]!.offset;
      return { offset: sectionOf(file.readUInt32LE(data)), size: file.readUInt32LE(data + 4) };
    }
  }
  return undefined;
}
