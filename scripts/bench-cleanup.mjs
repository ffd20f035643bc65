#!/usr/bin/env node
/**
 * `make bench-cleanup`: `s3dock cleanup remote` at scale. Seeds a fresh bucket on the test S3 server
 * with BENCH_IMAGES small images (object + metadata) and BENCH_TAGS tags naming BENCH_TAGGED of them,
 * straight with the S3 client, then measures the dry run and `--yes` (wall time, peak RSS, audit
 * events written). Prints the figures; no pass/fail. Plain Node ESM so it runs without a build step.
 *
 * Knobs (environment): BENCH_IMAGES (5000), BENCH_TAGS (5000), BENCH_TAGGED (100),
 * BENCH_CLI (dist/s3dock, or a .cjs bundle), S3DOCK_TEST_* (scripts/test-infra.sh env).
 */
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { CreateBucketCommand, DeleteBucketCommand, DeleteObjectsCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";

const ROOT = resolve(import.meta.dirname, "..");
const CLI = resolve(process.env.BENCH_CLI || join(ROOT, "dist/s3dock"));
const NODE = existsSync(join(ROOT, "node_modules/.bin/node")) ? join(ROOT, "node_modules/.bin/node") : process.execPath;
const cliCommand = (args) => (/\.c?js$/.test(CLI) ? [NODE, [CLI, ...args]] : [CLI, args]);
const IMAGES = Number(process.env.BENCH_IMAGES || "5000");
const TAGS = Number(process.env.BENCH_TAGS || "5000");
const TAGGED = Number(process.env.BENCH_TAGGED || "100");
const APP = "benchclean";

const log = (message) => process.stderr.write(`[bench-cleanup] ${message}\n`);
const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run under 'eval "$(scripts/test-infra.sh env)"' (make bench-cleanup does)`);
  return value;
};
const endpoint = env("S3DOCK_TEST_ENDPOINT");
const credentials = { accessKeyId: env("S3DOCK_TEST_ACCESS_KEY"), secretAccessKey: env("S3DOCK_TEST_SECRET_KEY") };
const region = process.env.S3DOCK_TEST_REGION || "us-east-1";
const s3 = new S3Client({ endpoint, region, forcePathStyle: true, credentials, requestChecksumCalculation: "WHEN_REQUIRED", responseChecksumValidation: "WHEN_REQUIRED" });
const bucket = `s3dock-bench-clean-${randomBytes(4).toString("hex")}`;

async function putAll(objects, concurrency = 48) {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < objects.length) {
        const { key, body } = objects[next++];
        await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
      }
    }),
  );
}

async function keys(prefix) {
  const found = [];
  let token;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
    found.push(...(page.Contents ?? []).map((object) => object.Key));
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return found;
}

function seedObjects() {
  const objects = [];
  const images = [];
  for (let i = 0; i < IMAGES; i++) {
    const day = String(1 + (Math.floor(i / 1440) % 28)).padStart(2, "0");
    const gitTime = `202501${day}-${String(Math.floor(i / 60) % 24).padStart(2, "0")}${String(i % 60).padStart(2, "0")}`;
    const gitHash = randomBytes(4).toString("hex").slice(0, 7);
    const base = `images/${APP}/202501/${APP}-${gitTime}-${gitHash}`;
    const body = randomBytes(64);
    const name = `${APP}:${gitTime}-${gitHash}`;
    images.push({ name, key: `${base}.tar.gz` });
    objects.push({ key: `${base}.tar.gz`, body });
    const metadata = { checksum: createHash("md5").update(body).digest("hex"), size: body.length, created_at: "2025-01-01T00:00:00Z", git_hash: gitHash, git_time: gitTime, image_tag: name, app_name: APP };
    objects.push({ key: `${base}.json`, body: JSON.stringify(metadata, null, 2) });
  }
  for (let t = 0; t < TAGS; t++) {
    const image = images[t % TAGGED];
    const tag = { target_type: "image", target_path: image.key, promoted_at: "2025-01-01T00:00:00Z", promoted_by: "bench", git_hash: "0000000", git_time: "20250101-0000", source_image: image.name };
    objects.push({ key: `tags/${APP}/v${Math.floor(t / 1000)}.${Math.floor(t / 100) % 10}.${t % 100}.json`, body: JSON.stringify(tag, null, 2) });
  }
  return objects;
}

async function main() {
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  try {
    const objects = seedObjects();
    log(`seeding ${IMAGES} images and ${TAGS} tags (${objects.length} objects) into ${bucket}`);
    const started = Date.now();
    await putAll(objects);
    log(`seeded in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    const args = ["cleanup", "remote", APP, "--older-than", "0s", "--keep", "0"];
    const dry = runTimed("dry run", args);
    const real = runTimed("--yes", [...args, "--yes"]);
    const audit = (await keys(`audit/${APP}/`)).length;
    const left = (await keys(`images/${APP}/`)).length / 2;
    const line = (label, r, count) => `${label.padEnd(8)} ${r.seconds.toFixed(1).padStart(7)} s  ${String(count).padStart(5)} images  peak RSS ${r.rssMb.toFixed(0)} MB`;
    process.stdout.write(
      [
        `cleanup remote, ${IMAGES} images, ${TAGS} tags naming ${TAGGED} of them (${bucket} on ${endpoint})`,
        line("dry run", dry, dry.doc.data.candidates.length),
        line("--yes", real, real.doc.data.deleted.length),
        `audit events written: ${audit}; images left: ${left}`,
        "",
      ].join("\n"),
    );
  } finally {
    log("removing the bucket");
    let listed;
    do {
      listed = await s3.send(new ListObjectsV2Command({ Bucket: bucket, MaxKeys: 1000 }));
      const batch = (listed.Contents ?? []).map((object) => ({ Key: object.Key }));
      if (batch.length > 0) await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: batch } }));
    } while (listed.IsTruncated);
    await s3.send(new DeleteBucketCommand({ Bucket: bucket }));
  }
}

/** Runs the CLI once under GNU time: wall seconds, peak RSS (MB) and its JSON document. */
function runTimed(label, args) {
  const [command, commandArgs] = cliCommand(["--json", ...args]);
  const started = Date.now();
  const rssFile = join(tmpdir(), `bench-cleanup-${process.pid}.rss`);
  let stdout;
  try {
    stdout = execFileSync("/usr/bin/time", ["-o", rssFile, "-f", "%M", command, ...commandArgs], {
      encoding: "utf8",
      maxBuffer: 256 * 1024 * 1024,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, AWS_ENDPOINT_URL: endpoint, AWS_ACCESS_KEY_ID: credentials.accessKeyId, AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey, AWS_REGION: region, S3DOCK_BUCKET: bucket },
    });
  } catch (error) {
    throw new Error(`${label} failed: ${error.stderr ?? error.message}`, { cause: error });
  }
  const seconds = (Date.now() - started) / 1000;
  const rssKib = Number(readFileSync(rssFile, "utf8").trim());
  rmSync(rssFile, { force: true });
  log(`${label}: ${seconds.toFixed(1)} s`);
  return { seconds, rssMb: rssKib / 1024, doc: JSON.parse(stdout) };
}

await main();
