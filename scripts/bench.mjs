#!/usr/bin/env node
/**
 * `make bench`: s3dock push and pull against what people do without it,
 *   docker save IMG | gzip | aws s3 cp - s3://…   and   aws s3 cp s3://… - | gunzip | docker load
 * on images built FROM scratch (static busybox + a mix of random bytes and compressible text),
 * against the local test S3 server. Prints the medians, the ratios and peak RSS, and writes
 * docs/benchmarks.md. Plain Node ESM so it runs without a build step.
 *
 * Knobs (environment):
 *   BENCH_SIZES_MB   image sizes in MB, default "350,1024"
 *   BENCH_RANDOM     share of random (incompressible) bytes, default 0.7; the rest is text
 *   BENCH_RUNS       repetitions of each measurement (the median is reported), default 3
 *   BENCH_LEVELS     gzip levels to compare for s3dock push, default "1,6"
 *   BENCH_OUTPUT     the Markdown file to write, default docs/benchmarks.md ("" to skip)
 *   BENCH_CLI        the s3dock to measure: the single executable (default dist/s3dock) or a
 *                    .cjs bundle, run with this Node
 *   S3DOCK_TEST_ENDPOINT / _ACCESS_KEY / _SECRET_KEY / _REGION   the S3 server (scripts/test-infra.sh env)
 */
import { randomBytes } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import {
  aptInstall,
  Bucket,
  CLI,
  cliCommand,
  collectGarbage,
  commandExists,
  fmt,
  LAYERS_SECTION,
  log,
  machine,
  markedSection,
  MB,
  median,
  removeImage,
  ROOT,
  s3dockTag,
  s3Settings,
  sh,
  TIME,
  textBlock,
  timed,
  writeFileOf,
} from "./bench-lib.mjs";

const SIZES_MB = (process.env.BENCH_SIZES_MB || "350,1024").split(",").map(Number);
const RANDOM_SHARE = Number(process.env.BENCH_RANDOM || "0.7");
const RUNS = Number(process.env.BENCH_RUNS || "3");
const LEVELS = (process.env.BENCH_LEVELS || "1,6").split(",").map(Number);
const OUTPUT = process.env.BENCH_OUTPUT ?? join(ROOT, "docs/benchmarks.md");
const APP = "benchapp";

// ── prerequisites ────────────────────────────────────────────────────────────────────────────────

function ensureTools() {
  const missing = [];
  // GNU time's %M is the peak RSS of the process it runs (and of its reaped children).
  if (!existsSync(TIME)) missing.push("time");
  if (!commandExists("aws")) missing.push("awscli");
  if (!existsSync("/bin/busybox")) missing.push("busybox-static");
  if (missing.length > 0) aptInstall(missing);
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run 'npm run build' (make bench does)`);
}

// ── test images ──────────────────────────────────────────────────────────────────────────────────

async function buildImage(sizeMb, workdir) {
  const tag = s3dockTag(APP);
  const dir = join(workdir, `image-${sizeMb}`);
  mkdirSync(join(dir, "data"), { recursive: true });
  copyFileSync("/bin/busybox", join(dir, "busybox"));
  const randomTotal = Math.round(sizeMb * MB * RANDOM_SHARE);
  const textTotal = sizeMb * MB - randomTotal;
  // Several files, as an application's layer would have, each under 256 MB.
  const files = Math.max(1, Math.ceil(randomTotal / (256 * MB)));
  for (let i = 0; i < files; i++) {
    await writeFileOf(join(dir, `data/blob-${i}.bin`), Math.ceil(randomTotal / files), (n) => randomBytes(n));
  }
  const block = textBlock(8 * 1024 * 1024);
  await writeFileOf(join(dir, "data/app.log"), textTotal, (n) => block.subarray(0, n));
  writeFileSync(join(dir, "Dockerfile"), ["FROM scratch", "COPY busybox /bin/busybox", "COPY data /data", 'CMD ["/bin/busybox", "sh"]', ""].join("\n"));
  log(`building ${tag} (${sizeMb} MB: ${Math.round(RANDOM_SHARE * 100)}% random, the rest text)`);
  try {
    sh("docker", ["build", "-q", "-t", tag, dir]);
  } catch (error) {
    throw new Error(`docker build of ${tag} failed:\n${error.stderr}`, { cause: error });
  }
  rmSync(dir, { recursive: true, force: true });
  return tag;
}

// ── running and timing ───────────────────────────────────────────────────────────────────────────

const bash = (script, env) => timed("bash", ["-o", "pipefail", "-c", script], env);

class Measurements {
  constructor() {
    this.rows = new Map();
  }
  add(name, result, extra = {}) {
    const row = this.rows.get(name) ?? { seconds: [], rssMb: [], ...extra };
    row.seconds.push(result.seconds);
    if (Number.isFinite(result.rssMb)) row.rssMb.push(result.rssMb);
    Object.assign(row, extra);
    this.rows.set(name, row);
    log(`  ${name}: ${result.seconds.toFixed(2)} s, peak RSS ${Number.isFinite(result.rssMb) ? result.rssMb.toFixed(0) : "?"} MB`);
  }
  median(name) {
    const row = this.rows.get(name);
    return row ? median(row.seconds) : undefined;
  }
}

// ── one image size ───────────────────────────────────────────────────────────────────────────────

async function benchSize(sizeMb, ctx) {
  const { bucket, settings, workdir } = ctx;
  const m = new Measurements();
  const tag = await buildImage(sizeMb, workdir);
  ctx.images.push(tag);
  const imageBytes = Number(sh("docker", ["image", "inspect", "-f", "{{.Size}}", tag]));
  const q = (value) => `'${value}'`;
  const baselineKey = `baseline/${tag.replace(":", "-")}.tar.gz`;
  const url = `s3://${bucket.name}/${baselineKey}`;
  const awsEnv = {
    ...process.env,
    AWS_ACCESS_KEY_ID: settings.accessKey,
    AWS_SECRET_ACCESS_KEY: settings.secretKey,
    AWS_DEFAULT_REGION: settings.region,
    AWS_CONFIG_FILE: "/dev/null",
    AWS_SHARED_CREDENTIALS_FILE: "/dev/null",
  };
  const aws = `aws --endpoint-url ${q(settings.endpoint)} --only-show-errors`;
  const home = mkdtempSync(join(workdir, "home-"));
  const s3dockEnv = {
    PATH: process.env.PATH,
    HOME: home,
    DOCKER_HOST: process.env.DOCKER_HOST,
    AWS_ENDPOINT_URL: settings.endpoint,
    AWS_ACCESS_KEY_ID: settings.accessKey,
    AWS_SECRET_ACCESS_KEY: settings.secretKey,
    AWS_REGION: settings.region,
    S3DOCK_BUCKET: bucket.name,
    ...(process.env.UV_THREADPOOL_SIZE ? { UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE } : {}),
  };
  for (const key of Object.keys(s3dockEnv)) if (s3dockEnv[key] === undefined) delete s3dockEnv[key];
  const s3dock = (args, config) => timed(...cliCommand(["--json", ...(config ? ["--config", config] : []), ...args]), s3dockEnv);
  const levelConfig = (level) => {
    const path = join(home, `gzip-${level}.json5`);
    writeFileSync(path, `{\n  docker: { compression: "gzip:${level}" },\n}\n`);
    return path;
  };
  const forgetPush = async () => {
    await bucket.deletePrefix(`images/${APP}/`);
    await bucket.deletePrefix(`audit/${APP}/`);
    collectGarbage();
  };

  log(`${tag}: reference points`);
  m.add("docker save > /dev/null", await bash(`docker save ${q(tag)} > /dev/null`));

  // Push: baseline and s3dock interleaved run by run, so background load hits both alike.
  let defaultLevel;
  const sizes = {};
  for (let run = 1; run <= RUNS; run++) {
    log(`${tag}: push, run ${run}/${RUNS}`);
    await bucket.deletePrefix(baselineKey);
    collectGarbage();
    m.add("baseline push", await bash(`docker save ${q(tag)} | gzip | ${aws} s3 cp - ${q(url)}`, awsEnv));
    sizes.baseline = await bucket.size(baselineKey);
    await forgetPush();
    const pushed = await s3dock(["push", tag]);
    const doc = JSON.parse(pushed.stdout).data;
    defaultLevel ??= await storedCompression(bucket, doc.s3_key);
    sizes[defaultLevel] = doc.size;
    m.add("s3dock push", pushed);
    for (const level of LEVELS.filter((l) => `gzip:${l}` !== defaultLevel)) {
      await forgetPush();
      const result = await s3dock(["push", tag], levelConfig(level));
      sizes[`gzip:${level}`] = JSON.parse(result.stdout).data.size;
      m.add(`s3dock push gzip:${level}`, result);
    }
  }
  // Leave the default-level object stored for the re-push and pull measurements.
  await forgetPush();
  await s3dock(["push", tag]);
  for (let run = 1; run <= RUNS; run++) {
    const result = await s3dock(["push", tag]);
    if (!JSON.parse(result.stdout).data.skipped) throw new Error("the unchanged re-push was not skipped");
    m.add("s3dock re-push (unchanged)", result);
  }

  // Pull: each run starts without the image in the engine.
  await s3dock(["promote", tag, "bench"]);
  for (let run = 1; run <= RUNS; run++) {
    log(`${tag}: pull, run ${run}/${RUNS}`);
    removeImage(tag);
    m.add("baseline pull", await bash(`${aws} s3 cp ${q(url)} - | gunzip | docker load -q`, awsEnv));
    removeImage(tag);
    const pulled = await s3dock(["pull", APP, "bench"]);
    if (JSON.parse(pulled.stdout).data.skipped) throw new Error("the pull was skipped: the image was still in the engine");
    m.add("s3dock pull", pulled);
  }

  log(`${tag}: more reference points`);
  m.add("aws s3 cp (download only) > /dev/null", await bash(`${aws} s3 cp ${q(url)} - > /dev/null`, awsEnv));
  const archive = join(workdir, "image.tar");
  await bash(`docker save ${q(tag)} > ${q(archive)}`);
  removeImage(tag);
  m.add("docker load < file", await bash(`docker load -q < ${q(archive)}`));
  m.add("gzip -1 < file > /dev/null (one core)", await bash(`gzip -1 < ${q(archive)} > /dev/null`));
  rmSync(archive, { force: true });
  removeImage(tag);
  await bucket.deletePrefix("");
  collectGarbage();
  return { sizeMb, tag, imageBytes, defaultLevel, sizes, m };
}

async function storedCompression(bucket, key) {
  const { GetObjectCommand } = await import("@aws-sdk/client-s3");
  const out = await bucket.s3.send(new GetObjectCommand({ Bucket: bucket.name, Key: key.replace(/\.tar\.gz$/, ".json") }));
  return JSON.parse(await out.Body.transformToString()).compression ?? "gzip:?";
}

// ── report ───────────────────────────────────────────────────────────────────────────────────────

const mb = (bytes) => (bytes === undefined ? "–" : `${(bytes / MB).toFixed(0)} MB`);

function tableFor(result) {
  const { m, sizes, defaultLevel } = result;
  const push = m.median("baseline push");
  const pull = m.median("baseline pull");
  const rows = [];
  const row = (name, label, baseline, size) => {
    const r = m.rows.get(name);
    if (!r) return;
    const seconds = median(r.seconds);
    const rss = r.rssMb.length > 0 ? Math.max(...r.rssMb) : undefined;
    rows.push(`| ${label} | ${fmt(seconds)} | ${baseline ? `${fmt(seconds / baseline)} ×` : ""} | ${fmt(rss, 0)} | ${size ?? ""} |`);
  };
  row("baseline push", "baseline push: `docker save \\| gzip \\| aws s3 cp -`", push, mb(sizes.baseline));
  row("s3dock push", `**s3dock push** (default, ${defaultLevel})`, push, mb(sizes[defaultLevel]));
  for (const level of LEVELS) row(`s3dock push gzip:${level}`, `s3dock push, gzip:${level}`, push, mb(sizes[`gzip:${level}`]));
  row("s3dock re-push (unchanged)", "**s3dock push**, unchanged image again", push);
  row("baseline pull", "baseline pull: `aws s3 cp - \\| gunzip \\| docker load`", pull);
  row("s3dock pull", "**s3dock pull**", pull);
  const refs = ["docker save > /dev/null", "docker load < file", "aws s3 cp (download only) > /dev/null", "gzip -1 < file > /dev/null (one core)"];
  for (const name of refs) row(name, `reference: \`${name}\``);
  return [
    `### ${result.sizeMb} MB image (${mb(result.imageBytes)} in the engine, ${Math.round(RANDOM_SHARE * 100)}% random bytes, the rest text)`,
    "",
    "| operation | median s | vs baseline | peak RSS MB | stored size |",
    "|---|---:|---:|---:|---:|",
    ...rows,
  ].join("\n");
}

function boundsParagraph(result, cores) {
  const { m, sizes, defaultLevel, sizeMb } = result;
  const get = (name) => m.median(name);
  const save = get("docker save > /dev/null");
  const push = get("s3dock push");
  const pull = get("s3dock pull");
  const others = LEVELS.filter((level) => `gzip:${level}` !== defaultLevel && m.rows.has(`s3dock push gzip:${level}`));
  const levels = others.map((level) => {
    const seconds = get(`s3dock push gzip:${level}`);
    const smaller = 1 - sizes[`gzip:${level}`] / sizes[defaultLevel];
    return `\`gzip:${level}\` takes ${fmt(seconds)} s for an object ${fmt(smaller * 100, 1)}% smaller than ${defaultLevel}'s`;
  });
  return [
    `**What bounds it (${sizeMb} MB).** Push: ${fmt(push)} s, against ${fmt(save)} s for \`docker save\` alone. ` +
      "s3dock deflates only what shrinks (a 64 KiB probe sends incompressible chunks as stored gzip members) and does it on all cores, " +
      `while the baseline runs one gzip over everything (one core of \`gzip -1\` alone takes ${fmt(get("gzip -1 < file > /dev/null (one core)"))} s here). ` +
      (levels.length > 0 ? `${levels.join("; ")}: hence the default level. ` : "") +
      `On ${cores} cores the export (dockerd), s3dock (tar rewrite, hashing, compression, upload) and the S3 server share the CPUs.`,
    `Pull: ${fmt(pull)} s, against ${fmt(get("docker load < file"))} s for \`docker load\` of the same archive from a file and ` +
      `${fmt(get("aws s3 cp (download only) > /dev/null"))} s for the download alone: the engine's load is the floor ` +
      "(Docker 20.10 unpacks the whole archive before it registers the layers), with download, checksum and gunzip running under it.",
  ].join("\n\n");
}

function printTable(result) {
  const { m, sizes } = result;
  console.log(`\n${result.tag} (${result.sizeMb} MB)`);
  console.log(`${"operation".padEnd(42)} ${"median s".padStart(9)} ${"ratio".padStart(7)} ${"peak RSS".padStart(9)} ${"size".padStart(8)}`);
  const push = m.median("baseline push");
  const pull = m.median("baseline pull");
  for (const [name, row] of m.rows) {
    const seconds = median(row.seconds);
    const baseline = name.includes("push") ? push : name.includes("pull") ? pull : undefined;
    const size = name === "baseline push" ? sizes.baseline : name === "s3dock push" ? sizes[result.defaultLevel] : sizes[name.replace("s3dock push ", "")];
    const rss = row.rssMb.length > 0 ? `${Math.max(...row.rssMb).toFixed(0)} MB` : "";
    console.log(
      `${name.padEnd(42)} ${fmt(seconds).padStart(9)} ${(baseline ? `${fmt(seconds / baseline)}×` : "").padStart(7)} ${rss.padStart(9)} ${(name.startsWith("baseline push") || name.startsWith("s3dock push") ? mb(size) : "").padStart(8)}`,
    );
  }
}

function writeMarkdown(results, info, startedAt, minutes, load) {
  const layersSection = existsSync(OUTPUT) ? markedSection(readFileSync(OUTPUT, "utf8"), LAYERS_SECTION) : "";
  const text = [
    "# Benchmarks",
    "",
    "Written by `make bench` (scripts/bench.mjs); run it again to measure your machine.",
    "",
    `- Date: ${startedAt.toISOString().slice(0, 16).replace("T", " ")} UTC (${minutes.toFixed(1)} min for the whole run)`,
    `- Machine: ${info.cores} cores (${info.model}), ${info.memoryGb} GiB memory, Linux ${info.kernel}`,
    `- Docker engine ${info.docker}, Node ${info.node}, ${info.aws}`,
    `- Load average (1 min) at the start and the end: ${load.start.toFixed(1)}, ${load.end.toFixed(1)}; other work on the machine makes single runs noisy, so compare the ratios`,
    "- S3 server: a local Ceph RADOS Gateway on loopback (scripts/test-infra.sh), one OSD",
    "",
    "## Method",
    "",
    `Each image is built FROM scratch: a static busybox and ${Math.round(RANDOM_SHARE * 100)}% random bytes (does not compress), the rest`,
    `log-like text (compresses about 2:1). Every operation runs ${RUNS} time(s) and the median is shown.`,
    "Baseline and s3dock runs are interleaved, so background load hits both alike.",
    "",
    "- baseline push: `docker save IMG | gzip | aws s3 cp - s3://bucket/key` (gzip's default level 6, one core)",
    "- s3dock push: `s3dock push IMG` after deleting what the previous run stored, so every run is a full push;",
    "  the gzip rows set `docker.compression` in a config file",
    "- unchanged re-push: `s3dock push IMG` with the image already stored (no export at all)",
    "- baseline pull: `aws s3 cp s3://bucket/key - | gunzip | docker load`, after `docker rmi IMG`",
    "- s3dock pull: `s3dock pull APP ENV` (promoted once), after `docker rmi IMG`",
    "- peak RSS: GNU time's maximum resident set size of the s3dock process (for the baseline, the",
    "  largest process of the pipeline)",
    "- ratio: median time over the baseline's median time (push rows against the baseline push, pull",
    "  rows against the baseline pull)",
    "",
    "## Results",
    "",
    ...results.flatMap((result) => [tableFor(result), "", boundsParagraph(result, info.cores), ""]),
    // The layer benchmark's section (bench-layers.mjs), measured on its own, is kept as it was.
    ...(layersSection ? [layersSection, ""] : []),
  ].join("\n");
  mkdirSync(dirname(OUTPUT), { recursive: true });
  writeFileSync(OUTPUT, text);
  log(`wrote ${OUTPUT}`);
}

// ── main ─────────────────────────────────────────────────────────────────────────────────────────

async function main() {
  const startedAt = new Date();
  const loadAtStart = loadavg()[0];
  ensureTools();
  const settings = s3Settings();
  const workdir = mkdtempSync(join(tmpdir(), "s3dock-bench-"));
  const bucket = new Bucket(settings);
  await bucket.create();
  const ctx = { bucket, settings, workdir, images: [] };
  const results = [];
  let failure;
  try {
    for (const size of SIZES_MB) {
      const result = await benchSize(size, ctx);
      results.push(result);
      printTable(result);
    }
  } catch (error) {
    failure = error;
  } finally {
    for (const tag of ctx.images) removeImage(tag);
    await bucket.destroy().catch((error) => log(`could not remove bucket ${bucket.name}: ${error.message}`));
    collectGarbage();
    rmSync(workdir, { recursive: true, force: true });
  }
  if (failure) throw failure;
  const minutes = (Date.now() - startedAt.getTime()) / 60000;
  if (OUTPUT) writeMarkdown(results, machine(), startedAt, minutes, { start: loadAtStart, end: loadavg()[0] });
  log(`done in ${minutes.toFixed(1)} min`);
}

main().catch((error) => {
  console.error(error.stack ?? String(error));
  process.exitCode = 1;
});
