/**
 * What the benchmark scripts (bench.mjs, bench-layers.mjs) share: the S3 settings and buckets, the
 * gateway's garbage collection, test data, timing, and the description of the machine.
 */
import { execFileSync, spawn } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import { createWriteStream, existsSync, readFileSync, rmSync } from "node:fs";
import { once } from "node:events";
import { cpus, tmpdir, totalmem } from "node:os";
import { join, resolve } from "node:path";
import {
  AbortMultipartUploadCommand,
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  S3Client,
} from "@aws-sdk/client-s3";

export const ROOT = resolve(import.meta.dirname, "..");
export const NODE = existsSync(join(ROOT, "node_modules/.bin/node")) ? join(ROOT, "node_modules/.bin/node") : process.execPath;
// BENCH_CLI: the s3dock to measure (make bench builds dist/s3dock first).
export const CLI = resolve(process.env.BENCH_CLI || join(ROOT, "dist/s3dock"));
export const cliCommand = (args) => (/\.c?js$/.test(CLI) ? [NODE, [CLI, ...args]] : [CLI, args]);
export const TIME = "/usr/bin/time";
export const MB = 1000 * 1000;

export const log = (message) => process.stderr.write(`[bench] ${message}\n`);
export const sh = (command, args) => execFileSync(command, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
export const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};
export const commandExists = (name) => {
  try {
    sh("bash", ["-c", `command -v ${name} && ${name} --version`]);
    return true;
  } catch {
    return false;
  }
};
export const fmt = (value, digits = 2) => (value === undefined || !Number.isFinite(value) ? "–" : value.toFixed(digits));

// ── prerequisites ────────────────────────────────────────────────────────────────────────────────

export function aptInstall(packages) {
  if (process.getuid?.() !== 0) throw new Error(`missing ${packages.join(", ")}: install them (apt-get install ${packages.join(" ")})`);
  log(`installing ${packages.join(", ")} with apt-get`);
  execFileSync("apt-get", ["update"], { stdio: "ignore" });
  execFileSync("apt-get", ["install", "-y", "--no-install-recommends", ...packages], {
    stdio: "ignore",
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
  });
}

export function s3Settings() {
  let env = process.env;
  if (!env.S3DOCK_TEST_ENDPOINT) {
    // Outside `make bench`: ask the test infrastructure for its settings (it starts nothing here).
    const lines = sh(join(ROOT, "scripts/test-infra.sh"), ["env"]).split("\n");
    env = { ...env };
    for (const line of lines) {
      const match = /^(?:export )?(S3DOCK_TEST_\w+)=["']?([^"']*)["']?$/.exec(line.trim());
      if (match) env[match[1]] = match[2];
    }
  }
  if (!env.S3DOCK_TEST_ENDPOINT) throw new Error("no S3 server: run 'make infra' (or use 'make bench')");
  return {
    endpoint: env.S3DOCK_TEST_ENDPOINT,
    accessKey: env.S3DOCK_TEST_ACCESS_KEY,
    secretKey: env.S3DOCK_TEST_SECRET_KEY,
    region: env.S3DOCK_TEST_REGION || "us-east-1",
  };
}

/**
 * Ceph RGW frees a deleted object's data only when its garbage collector gets to it (two hours
 * later by default), and the test gateway's store is 8 GB of memory: without collecting between
 * runs, the repeated gigabyte uploads fill it and every write stalls. Only for the local gateway.
 */
const RGW_CONF = join(process.env.RGW_DIR || "/tmp/s3dock-rgw", "ceph.conf");
export function collectGarbage() {
  if (!existsSync(RGW_CONF)) return;
  try {
    execFileSync("radosgw-admin", ["-c", RGW_CONF, "-n", "client.admin", "gc", "process", "--include-all"], { stdio: "ignore", timeout: 300_000 });
  } catch (error) {
    log(`could not run the gateway's garbage collection (${error.message}); space is freed later`);
  }
}

// ── the S3 bucket ────────────────────────────────────────────────────────────────────────────────

export class Bucket {
  constructor(settings, prefix = "s3dock-bench") {
    this.name = `${prefix}-${randomBytes(4).toString("hex")}`;
    this.s3 = new S3Client({
      endpoint: settings.endpoint,
      region: settings.region,
      forcePathStyle: true,
      credentials: { accessKeyId: settings.accessKey, secretAccessKey: settings.secretKey },
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
    });
  }

  create() {
    return this.s3.send(new CreateBucketCommand({ Bucket: this.name }));
  }

  async size(key) {
    return (await this.s3.send(new HeadObjectCommand({ Bucket: this.name, Key: key }))).ContentLength;
  }

  /** The sum of the sizes of the bucket's objects (completed ones: what the bucket stores). */
  async totalBytes() {
    let total = 0;
    let token;
    do {
      const page = await this.s3.send(new ListObjectsV2Command({ Bucket: this.name, ContinuationToken: token }));
      for (const object of page.Contents ?? []) total += object.Size ?? 0;
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return total;
  }

  async deletePrefix(prefix) {
    let token;
    do {
      const page = await this.s3.send(new ListObjectsV2Command({ Bucket: this.name, Prefix: prefix, ContinuationToken: token }));
      const objects = (page.Contents ?? []).map((object) => ({ Key: object.Key }));
      if (objects.length > 0) await this.s3.send(new DeleteObjectsCommand({ Bucket: this.name, Delete: { Objects: objects } }));
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async destroy() {
    const uploads = await this.s3.send(new ListMultipartUploadsCommand({ Bucket: this.name }));
    for (const upload of uploads.Uploads ?? []) {
      await this.s3.send(new AbortMultipartUploadCommand({ Bucket: this.name, Key: upload.Key, UploadId: upload.UploadId }));
    }
    await this.deletePrefix("");
    await this.s3.send(new DeleteBucketCommand({ Bucket: this.name }));
  }
}

// ── test data ────────────────────────────────────────────────────────────────────────────────────

/**
 * Text that compresses like real text rather than like one repeated line: words drawn at random
 * from a small vocabulary, with numbers and hex ids. Blocks repeat only beyond deflate's 32 KiB
 * window, so the repetition does not help gzip.
 */
export function textBlock(bytes) {
  const vocabulary = Array.from({ length: 2000 }, () => randomBytes(1 + randomInt(5)).toString("base64url").toLowerCase().replace(/[^a-z]/g, "e"));
  const lines = [];
  let length = 0;
  while (length < bytes) {
    const words = Array.from({ length: 6 + randomInt(10) }, () => vocabulary[randomInt(vocabulary.length)]);
    const line = `${new Date(1.7e12 + randomInt(1e9)).toISOString()} ${randomBytes(4).toString("hex")} ${words.join(" ")} ${randomInt(100000)}\n`;
    lines.push(line);
    length += line.length;
  }
  return Buffer.from(lines.join("")).subarray(0, bytes);
}

export async function writeFileOf(path, total, nextBlock) {
  const out = createWriteStream(path);
  for (let written = 0; written < total; ) {
    const block = nextBlock(Math.min(16 * 1024 * 1024, total - written));
    written += block.length;
    if (!out.write(block)) await once(out, "drain");
  }
  out.end();
  await once(out, "finish");
}

/** Any valid-looking s3dock tag for APP: app:YYYYMMDD-HHMM-<7 hex>, unique by its hash. */
export function s3dockTag(app) {
  const stamp = new Date().toISOString().slice(0, 16).replace(/[-:]/g, "").replace("T", "-");
  return `${app}:${stamp}-${randomBytes(4).toString("hex").slice(0, 7)}`;
}

// ── running and timing ───────────────────────────────────────────────────────────────────────────

/**
 * Runs a command under GNU time: wall seconds (measured here), peak RSS in MB (%M: the process, or
 * for a shell pipeline the largest of its processes) and stdout.
 */
export async function timed(command, args, env = process.env, cwd = undefined) {
  const rssFile = join(tmpdir(), `bench-rss-${randomBytes(4).toString("hex")}`);
  const started = process.hrtime.bigint();
  const child = spawn(TIME, ["-f", "%M", "-o", rssFile, command, ...args], { env, cwd, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk) => (stdout += chunk));
  child.stderr.on("data", (chunk) => (stderr += chunk));
  const [code] = await once(child, "close");
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const rssText = existsSync(rssFile) ? readFileSync(rssFile, "utf8").trim().split("\n").pop() : "";
  rmSync(rssFile, { force: true });
  if (code !== 0) throw new Error(`${command} ${args.join(" ")} failed (exit ${code}):\n${stderr.slice(-4000)}`);
  return { seconds, rssMb: Number(rssText) / 1024, stdout };
}

export function removeImage(tag) {
  try {
    sh("docker", ["rmi", "-f", tag]);
  } catch {
    // not there
  }
}

// ── report ───────────────────────────────────────────────────────────────────────────────────────

export function machine() {
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  const model = /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1] ?? cpus()[0]?.model ?? "unknown";
  let dockerVersion = "unknown";
  try {
    dockerVersion = sh("docker", ["version", "--format", "{{.Server.Version}}"]);
  } catch {
    // reported as unknown
  }
  return {
    cores: Number(sh("nproc", [])),
    memoryGb: (totalmem() / 1024 ** 3).toFixed(1),
    model,
    docker: dockerVersion,
    node: sh(NODE, ["--version"]),
    aws: commandExists("aws") ? sh("bash", ["-c", "aws --version 2>&1"]).split(" ")[0] : "no aws-cli",
    kernel: sh("uname", ["-r"]),
  };
}

/**
 * docs/benchmarks.md is written by bench.mjs from scratch; the layer benchmark's section lives
 * between these markers, which bench.mjs carries over and bench-layers.mjs replaces.
 */
export const LAYERS_SECTION = { begin: "<!-- bench-layers:begin -->", end: "<!-- bench-layers:end -->" };

/** The marked section of TEXT (markers included), or "" when it has none. */
export function markedSection(text, markers) {
  const start = text.indexOf(markers.begin);
  const end = text.indexOf(markers.end, start);
  return start >= 0 && end > start ? text.slice(start, end + markers.end.length) : "";
}
