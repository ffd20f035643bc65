#!/usr/bin/env node
/**
 * `make bench`, suite "layers": the everyday update, where an app's base layers stay and only its
 * top layer changes. An image of about 322 MB, three base layers (300 MiB, mostly random bytes plus
 * text) and a 5 MiB app layer, built FROM scratch; v1 is stored and stays on the host, and every run
 * builds a new v2 whose app layer alone differs. Measured in one run, stores interleaved run by run:
 *   - registry: Debian's docker-registry (distribution 2.8) with its S3 driver on the same gateway,
 *     in a bucket of its own, listening on 127.0.0.1 (Docker allows plain HTTP on loopback):
 *     `docker push` of v2, and `docker pull` of v2 with v1 on the host;
 *   - s3dock, for each storage format: `s3dock push` of v2 and `s3dock pull APP TAG` of it;
 *   - the bytes each v2 push adds to its bucket, and what a bucket stores once the v1 of a second
 *     app on the same base image is pushed too.
 * Prints the medians and their ratios to the registry's, and writes its section of
 * docs/benchmarks.md and the table in README's Performance section. Starts and stops its own
 * registry process (never the system service) and removes every image and bucket it created.
 *
 * Knobs (environment):
 *   BENCH_RUNS            repetitions of each v2 measurement (the median is reported), default 3
 *   BENCH_LAYER_BASE_MIB  the base layers' sizes in MiB, default "60,140,100"
 *   BENCH_LAYER_APP_MIB   the app layer's size in MiB, default 5
 *   BENCH_RANDOM          share of random (incompressible) bytes in every layer, default 0.7
 *   BENCH_FORMATS         s3dock storage formats, passed as `push --format F`; default "archive,layers"
 *                         when `s3dock push --help` offers --format, else today's format alone
 *                         (labelled archive, pushed without the option)
 *   BENCH_REGISTRY_PORT   the registry's port on 127.0.0.1, default 5000
 *   BENCH_OUTPUT          the Markdown file whose layer section is written, default docs/benchmarks.md ("" to skip)
 *   BENCH_README          the README whose marked table is written, default README.md ("" to skip)
 *   BENCH_CLI             the s3dock to measure (see bench.mjs)
 *   S3DOCK_TEST_ENDPOINT / _ACCESS_KEY / _SECRET_KEY / _REGION   the S3 server (scripts/test-infra.sh env)
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import {
  aptInstall,
  Bucket,
  CLI,
  cliCommand,
  collectGarbage,
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

const MIB = 1024 * 1024;
const RUNS = Number(process.env.BENCH_RUNS || "3");
const BASE_MIB = (process.env.BENCH_LAYER_BASE_MIB || "60,140,100").split(",").map(Number);
const APP_MIB = Number(process.env.BENCH_LAYER_APP_MIB || "5");
const RANDOM_SHARE = Number(process.env.BENCH_RANDOM || "0.7");
const REGISTRY_PORT = Number(process.env.BENCH_REGISTRY_PORT || "5000");
const OUTPUT = process.env.BENCH_OUTPUT ?? join(ROOT, "docs/benchmarks.md");
const README = process.env.BENCH_README ?? join(ROOT, "README.md");
const REGISTRY_BIN = "/usr/bin/docker-registry";
const APP = "benchapp";
const SECOND_APP = "benchapp2";
const README_TABLE = { begin: "<!-- bench-layers:readme:begin -->", end: "<!-- bench-layers:readme:end -->" };

const mib = (bytes) => (bytes === undefined || !Number.isFinite(bytes) ? "–" : `${(bytes / MIB).toFixed(bytes < 100 * MIB ? 1 : 0)} MiB`);
const ratio = (value, base) => (value !== undefined && base ? `${fmt(value / base)} ×` : "");

// ── prerequisites ────────────────────────────────────────────────────────────────────────────────

function ensureTools() {
  const missing = [];
  // GNU time's %M is the peak RSS of the process it runs.
  if (!existsSync(TIME)) missing.push("time");
  if (!existsSync("/bin/busybox")) missing.push("busybox-static");
  // The package's init scripts are not used: the registry runs here as a child with its own config.
  if (!existsSync(REGISTRY_BIN)) missing.push("docker-registry");
  if (missing.length > 0) aptInstall(missing);
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run 'npm run build' (make bench does)`);
}

/** The storage formats to measure, and whether this s3dock takes `push --format`. */
function storageFormats() {
  const takesFormat = sh(...cliCommand(["push", "--help"])).includes("--format");
  const asked = process.env.BENCH_FORMATS?.split(",").filter(Boolean);
  if (asked && !takesFormat && asked.some((format) => format !== "archive")) {
    throw new Error(`BENCH_FORMATS=${process.env.BENCH_FORMATS}, but ${CLI} has no 'push --format'`);
  }
  return { formats: asked ?? (takesFormat ? ["archive", "layers"] : ["archive"]), takesFormat };
}

// ── test images ──────────────────────────────────────────────────────────────────────────────────

/** A layer's files: random bytes in files of up to 16 MiB (libraries, assets), text in up to 4 MiB. */
async function writeLayerFiles(dir, sizeMib) {
  mkdirSync(dir, { recursive: true });
  const randomTotal = Math.round(sizeMib * MIB * RANDOM_SHARE);
  const textTotal = Math.round(sizeMib * MIB) - randomTotal;
  for (let i = 0, left = randomTotal; left > 0; i++, left -= 16 * MIB) {
    await writeFileOf(join(dir, `lib-${i}.so`), Math.min(16 * MIB, left), (n) => randomBytes(n));
  }
  const block = textBlock(Math.min(4 * MIB, Math.max(textTotal, 1)));
  for (let i = 0, left = textTotal; left > 0; i++, left -= 4 * MIB) {
    await writeFileOf(join(dir, `doc-${i}.txt`), Math.min(4 * MIB, left), (n) => block.subarray(0, n));
  }
}

function dockerBuild(tag, dir) {
  try {
    sh("docker", ["build", "-q", "-t", tag, dir]);
  } catch (error) {
    throw new Error(`docker build of ${tag} failed:\n${error.stderr}`, { cause: error });
  }
  rmSync(dir, { recursive: true, force: true });
  return sh("docker", ["image", "inspect", "-f", "{{.Id}}", tag]);
}

/** The base image: busybox and generated files in BASE_MIB.length layers, one COPY each. */
async function buildBase(ctx) {
  const dir = join(ctx.workdir, "base");
  const tag = `s3dock-bench-base:${randomBytes(4).toString("hex")}`;
  const copies = [];
  for (const [i, sizeMib] of BASE_MIB.entries()) {
    const root = join(dir, `layer-${i + 1}`);
    await writeLayerFiles(join(root, `opt/base-${i + 1}`), sizeMib);
    if (i === 0) {
      mkdirSync(join(root, "bin"), { recursive: true });
      copyFileSync("/bin/busybox", join(root, "bin/busybox"));
    }
    copies.push(`COPY layer-${i + 1} /`);
  }
  writeFileSync(join(dir, "Dockerfile"), ["FROM scratch", ...copies, 'CMD ["/bin/busybox", "sh"]', ""].join("\n"));
  log(`building the base image ${tag} (${BASE_MIB.join(" + ")} MiB, ${Math.round(RANDOM_SHARE * 100)}% random bytes)`);
  const id = dockerBuild(tag, dir);
  ctx.images.push(id);
  return tag;
}

/** A version of APP: the base image and one app layer of APP_MIB of new content. */
async function buildApp(ctx, app, version, base) {
  const dir = join(ctx.workdir, `${app}-${version}`);
  await writeLayerFiles(join(dir, "app"), APP_MIB);
  writeFileSync(join(dir, "Dockerfile"), [`FROM ${base}`, "COPY app /app", ""].join("\n"));
  const tag = s3dockTag(app);
  const id = dockerBuild(tag, dir);
  ctx.images.push(id);
  return { app, version, tag, id, layers: diffIds(tag) };
}

const diffIds = (ref) => sh("docker", ["image", "inspect", "-f", "{{json .RootFS.Layers}}", ref]);

/** Removes an image from the engine under all its names. */
function forget(image) {
  removeImage(image.id);
  ctx.images = ctx.images.filter((id) => id !== image.id);
}

/** The pulled image must be the pushed one: same layers (image IDs differ across image stores). */
function checkPulled(ref, image) {
  const layers = diffIds(ref);
  if (layers !== image.layers) throw new Error(`${ref} was pulled with other layers than ${image.tag}'s`);
}

// ── the stores ───────────────────────────────────────────────────────────────────────────────────

/** Debian's docker-registry with the S3 driver, run as a child of this script. */
class Registry {
  constructor(bucket, settings, workdir) {
    this.label = "registry";
    this.bucket = bucket;
    this.settings = settings;
    this.workdir = workdir;
    this.host = `127.0.0.1:${REGISTRY_PORT}`;
  }

  ref(image) {
    return `${this.host}/${image.app}:${image.version}`;
  }

  async answers() {
    try {
      return (await fetch(`http://${this.host}/v2/`, { signal: AbortSignal.timeout(2000) })).ok;
    } catch {
      return false;
    }
  }

  async start() {
    if (await this.answers()) throw new Error(`${this.host} is already taken: set BENCH_REGISTRY_PORT to a free port`);
    const config = join(this.workdir, "registry.yml");
    // The distribution 2.8 S3 driver uses path-style requests when regionendpoint is set;
    // forcepathstyle says so for the releases that read it. Redirects stay on (the default): the
    // engine downloads blobs from the gateway directly, the registry's fastest way.
    const yaml = [
      "version: 0.1",
      "log:",
      "  level: warn",
      "  accesslog:",
      "    disabled: true",
      "storage:",
      "  s3:",
      `    accesskey: "${this.settings.accessKey}"`,
      `    secretkey: "${this.settings.secretKey}"`,
      `    region: "${this.settings.region}"`,
      `    regionendpoint: "${this.settings.endpoint}"`,
      "    forcepathstyle: true",
      `    bucket: "${this.bucket.name}"`,
      `    secure: ${this.settings.endpoint.startsWith("https:")}`,
      "    v4auth: true",
      "  cache:",
      "    blobdescriptor: inmemory",
      "  maintenance:",
      "    uploadpurging:",
      "      enabled: false",
      "http:",
      `  addr: ${this.host}`,
      `  secret: ${randomBytes(16).toString("hex")}`,
      "health:",
      "  storagedriver:",
      "    enabled: false",
      "",
    ].join("\n");
    writeFileSync(config, yaml, { mode: 0o600 });
    this.logPath = join(this.workdir, "registry.log");
    const logFd = openSync(this.logPath, "w");
    // Without the caller's AWS_* variables: the registry's AWS SDK panics on an AWS_CA_BUNDLE, and
    // its credentials are in the config file.
    const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("AWS_")));
    this.child = spawn(REGISTRY_BIN, ["serve", config], { env, stdio: ["ignore", logFd, logFd] });
    closeSync(logFd);
    this.exited = once(this.child, "exit");
    let gone = false;
    this.exited.then(() => (gone = true));
    for (let waited = 0; waited < 30_000; waited += 250) {
      if (gone) break;
      if (await this.answers()) return;
      await sleep(250);
    }
    await this.stop();
    throw new Error(`the registry did not come up on ${this.host}:\n${this.logTail()}`);
  }

  logTail() {
    return existsSync(this.logPath) ? readFileSync(this.logPath, "utf8").slice(-2000) : "";
  }

  async stop() {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill("SIGTERM");
    const stopped = await Promise.race([this.exited.then(() => true), sleep(10_000).then(() => false)]);
    if (!stopped) {
      this.child.kill("SIGKILL");
      await this.exited;
    }
  }

  async push(image) {
    sh("docker", ["tag", image.id, this.ref(image)]);
    try {
      return await timed("docker", ["push", this.ref(image)]);
    } catch (error) {
      throw new Error(`${error.message}\nregistry log:\n${this.logTail()}`, { cause: error });
    }
  }

  async pull(image) {
    const result = await timed("docker", ["pull", "-q", this.ref(image)]);
    checkPulled(this.ref(image), image);
    return result;
  }

  /** The compressed size of the image's top layer, as the registry stores it (Docker's gzip). */
  async topLayerBytes(image) {
    const response = await fetch(`http://${this.host}/v2/${image.app}/manifests/${image.version}`, {
      headers: { Accept: "application/vnd.docker.distribution.manifest.v2+json" },
      signal: AbortSignal.timeout(10_000),
    });
    if (!response.ok) throw new Error(`the registry's manifest of ${this.ref(image)}: HTTP ${response.status}`);
    return (await response.json()).layers.at(-1).size;
  }
}

/** s3dock with one storage format, in a bucket of its own. */
class S3dock {
  constructor(bucket, settings, workdir, format, takesFormat) {
    this.label = `s3dock ${format}`;
    this.bucket = bucket;
    this.workdir = workdir;
    this.formatArgs = takesFormat ? ["--format", format] : [];
    const home = mkdtempSync(join(workdir, "home-"));
    this.env = {
      PATH: process.env.PATH,
      HOME: home,
      DOCKER_HOST: process.env.DOCKER_HOST,
      AWS_ENDPOINT_URL: settings.endpoint,
      AWS_ACCESS_KEY_ID: settings.accessKey,
      AWS_SECRET_ACCESS_KEY: settings.secretKey,
      AWS_REGION: settings.region,
      S3DOCK_BUCKET: bucket.name,
      UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE,
    };
    for (const key of Object.keys(this.env)) if (this.env[key] === undefined) delete this.env[key];
  }

  async run(args) {
    // cwd: the work directory, so that no ./s3dock.json5 is picked up.
    const result = await timed(...cliCommand(["--json", ...args]), this.env, this.workdir);
    if (JSON.parse(result.stdout).data?.skipped) throw new Error(`s3dock ${args.join(" ")} was skipped`);
    return result;
  }

  push(image) {
    return this.run(["push", ...this.formatArgs, image.tag]);
  }

  async pull(image) {
    const result = await this.run(["pull", image.app, image.tag.split(":")[1]]);
    checkPulled(image.tag, image);
    return result;
  }
}

// ── the benchmark ────────────────────────────────────────────────────────────────────────────────

const ctx = { workdir: undefined, images: [], buckets: [], registry: undefined };

async function measure(settings) {
  const { formats, takesFormat } = storageFormats();
  const registryBucket = new Bucket(settings, "s3dock-bench-registry");
  ctx.buckets.push(registryBucket);
  await registryBucket.create();
  ctx.registry = new Registry(registryBucket, settings, ctx.workdir);
  const stores = [ctx.registry];
  for (const format of formats) {
    const bucket = new Bucket(settings, `s3dock-bench-${format}`);
    ctx.buckets.push(bucket);
    await bucket.create();
    stores.push(new S3dock(bucket, settings, ctx.workdir, format, takesFormat));
  }
  log(`starting ${REGISTRY_BIN} on ${ctx.registry.host} (S3 driver, bucket ${registryBucket.name})`);
  await ctx.registry.start();

  const base = await buildBase(ctx);
  const v1 = await buildApp(ctx, APP, "v1", base);
  const other = await buildApp(ctx, SECOND_APP, "v1", base);
  const imageBytes = Number(sh("docker", ["image", "inspect", "-f", "{{.Size}}", v1.id]));
  const results = new Map(stores.map((store) => [store.label, { push: [], pull: [], added: [], pushRss: [], pullRss: [] }]));

  // v1 of both apps, stored once: what a bucket holds for two apps on one base image.
  for (const store of stores) {
    const r = results.get(store.label);
    log(`${store.label}: v1 of ${APP}, then of ${SECOND_APP}`);
    r.firstPush = (await store.push(v1)).seconds;
    r.afterOneApp = await store.bucket.totalBytes();
    await store.push(other);
    r.afterTwoApps = await store.bucket.totalBytes();
    log(`  first push ${fmt(r.firstPush)} s; stored ${mib(r.afterOneApp)}, with ${SECOND_APP} ${mib(r.afterTwoApps)}`);
  }
  const secondAppLayer = await ctx.registry.topLayerBytes(other);

  const changedLayer = [];
  for (let run = 0; run < RUNS; run++) {
    const v2 = await buildApp(ctx, APP, "v2", base);
    // Rotate the order, so that neither store always runs first after the build.
    const order = stores.map((_, i) => stores[(i + run) % stores.length]);
    for (const store of order) {
      const r = results.get(store.label);
      log(`run ${run + 1}/${RUNS}: ${store.label} push v2`);
      const before = await store.bucket.totalBytes();
      const pushed = await store.push(v2);
      r.added.push((await store.bucket.totalBytes()) - before);
      r.push.push(pushed.seconds);
      r.pushRss.push(pushed.rssMb);
      log(`  ${fmt(pushed.seconds)} s, ${mib(r.added.at(-1))} added`);
    }
    changedLayer.push(await ctx.registry.topLayerBytes(v2));
    for (const store of order) {
      const r = results.get(store.label);
      removeImage(v2.id);
      log(`run ${run + 1}/${RUNS}: ${store.label} pull v2 (v1 on the host)`);
      const pulled = await store.pull(v2);
      r.pull.push(pulled.seconds);
      r.pullRss.push(pulled.rssMb);
      log(`  ${fmt(pulled.seconds)} s`);
    }
    forget(v2);
  }
  return { stores, results, imageBytes, changedLayer: median(changedLayer), secondAppLayer };
}

/** Interrupted, a registry's last writes can land after the listing: then a second pass empties it. */
async function destroyBucket(bucket) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await bucket.destroy();
    } catch (error) {
      if (error.name === "NoSuchBucket") return;
      if (attempt === 3) return log(`could not remove bucket ${bucket.name}: ${error.name} ${error.message}`);
      await sleep(2000);
    }
  }
}

/** Stops the registry and removes the images, buckets and files this run created; safe to call twice. */
async function cleanUp() {
  await ctx.registry?.stop();
  ctx.registry = undefined;
  // Newest first: an image goes before the base image it was built on.
  for (const id of ctx.images.reverse()) removeImage(id);
  ctx.images = [];
  for (const bucket of ctx.buckets) await destroyBucket(bucket);
  if (ctx.buckets.length > 0) collectGarbage();
  ctx.buckets = [];
  if (ctx.workdir) rmSync(ctx.workdir, { recursive: true, force: true });
  ctx.workdir = undefined;
}

// ── report ───────────────────────────────────────────────────────────────────────────────────────

function summarize(measured) {
  const { stores, results } = measured;
  const rows = stores.map((store) => {
    const r = results.get(store.label);
    return {
      label: store.label,
      s3dock: store instanceof S3dock,
      push: median(r.push),
      pull: median(r.pull),
      added: median(r.added),
      pushRss: Math.max(...r.pushRss.filter(Number.isFinite)),
      pullRss: Math.max(...r.pullRss.filter(Number.isFinite)),
      firstPush: r.firstPush,
      afterOneApp: r.afterOneApp,
      afterTwoApps: r.afterTwoApps,
    };
  });
  return { ...measured, registry: rows[0], s3dock: rows.slice(1) };
}

/** Issue 19's targets for a storage format, each with whether this run met it. */
function targets(summary, row) {
  const { registry, changedLayer, secondAppLayer } = summary;
  return [
    [`v2 push ≤ the registry's (${fmt(registry.push)} s)`, row.push <= registry.push],
    [`bytes added by the v2 push ≤ 1.1 × the changed layer's compressed size (${mib(1.1 * changedLayer)})`, row.added <= 1.1 * changedLayer],
    [`v2 pull with v1 on the host ≤ the registry's (${fmt(registry.pull)} s)`, row.pull <= registry.pull],
    [
      `two apps on one base store it once: the second app's v1 adds ≤ 1.1 × its app layer (${mib(1.1 * secondAppLayer)})`,
      row.afterTwoApps - row.afterOneApp <= 1.1 * secondAppLayer,
    ],
  ];
}

function printSummary(summary) {
  const { registry, s3dock } = summary;
  const columns = [registry, ...s3dock];
  const line = (name, values) => console.log(`${name.padEnd(40)}${values.map((v) => String(v).padStart(22)).join("")}`);
  console.log(`\nthe everyday update: v2 of a ${(summary.imageBytes / MB).toFixed(0)} MB image, only its ${APP_MIB} MiB app layer changed (medians of ${RUNS})`);
  line("", columns.map((row) => row.label));
  const withRatio = (row, key, show) => `${show(row[key])}${row.s3dock ? ` (${ratio(row[key], registry[key])})` : ""}`;
  line("push v2 (s)", columns.map((row) => withRatio(row, "push", fmt)));
  line("bytes added by the v2 push", columns.map((row) => withRatio(row, "added", mib)));
  line("pull v2, v1 on the host (s)", columns.map((row) => withRatio(row, "pull", fmt)));
  line("first push of v1 (s, one run)", columns.map((row) => fmt(row.firstPush)));
  line("stored after v1 of one app", columns.map((row) => mib(row.afterOneApp)));
  line("stored after v1 of two apps", columns.map((row) => mib(row.afterTwoApps)));
  line("s3dock peak RSS push / pull (MB)", columns.map((row) => (row.s3dock ? `${fmt(row.pushRss, 0)} / ${fmt(row.pullRss, 0)}` : "")));
  console.log(`changed layer, compressed as the registry stores it: ${mib(summary.changedLayer)}`);
  for (const row of s3dock) {
    for (const [target, met] of targets(summary, row)) console.log(`${row.label}: ${met ? "met" : "NOT met"}: ${target}`);
  }
}

function markdownSection(summary, info, startedAt, minutes, load) {
  const { registry, s3dock } = summary;
  const header = ["| v2: only the app layer changed | registry |", ...s3dock.map((row) => ` ${row.label} | × registry |`)].join("");
  const align = ["|---|---:|", ...s3dock.map(() => "---:|---:|")].join("");
  const row = (name, key, show, withRatio = true) =>
    [`| ${name} | ${show(registry[key])} |`, ...s3dock.map((r) => ` ${show(r[key])} | ${withRatio ? ratio(r[key], registry[key]) : ""} |`)].join("");
  const rss = [`| s3dock peak RSS, push / pull (MB) | |`, ...s3dock.map((r) => ` ${fmt(r.pushRss, 0)} / ${fmt(r.pullRss, 0)} | |`)].join("");
  const registryVersion = sh("dpkg-query", ["-W", "-f", "${Version}", "docker-registry"]);
  return [
    LAYERS_SECTION.begin,
    "## The everyday update: only the app layer changed",
    "",
    "Written by `make bench` (scripts/bench-layers.mjs; `make bench BENCH_SUITES=layers` runs it alone).",
    "",
    `- Date: ${startedAt.toISOString().slice(0, 16).replace("T", " ")} UTC (${minutes.toFixed(1)} min for this suite)`,
    `- Machine: ${info.cores} cores (${info.model}), ${info.memoryGb} GiB memory, Linux ${info.kernel}; Docker engine ${info.docker}, Node ${info.node}`,
    `- Load average (1 min) at the start and the end: ${load.start.toFixed(1)}, ${load.end.toFixed(1)}; other work on the machine makes single runs noisy, so compare the ratios`,
    `- Peer: Debian's docker-registry ${registryVersion} (distribution), S3 driver on the same Ceph RGW`,
    "",
    `The image (${(summary.imageBytes / MB).toFixed(0)} MB in the engine) is built FROM scratch: ${BASE_MIB.length} base layers of ${BASE_MIB.join(", ")} MiB`,
    `(busybox, then ${Math.round(RANDOM_SHARE * 100)}% random bytes in files of up to 16 MiB, the rest log-like text) and a ${APP_MIB} MiB app layer`,
    "of the same mix. v1 of the app, and v1 of a second app on the same base image, are pushed to every",
    "store first, and v1 stays on the host. Every run builds a new v2, whose app layer alone has new",
    "content, pushes it to every store, then removes it from the engine and pulls it from every store;",
    `the stores take turns going first. Medians of ${RUNS} runs.`,
    "",
    "- registry: `docker-registry serve` with the S3 driver in a bucket of its own, on 127.0.0.1 (plain",
    "  HTTP, which Docker allows on loopback), its defaults otherwise (blob downloads are redirected to",
    "  the gateway); `docker push 127.0.0.1:PORT/app:v2`, and `docker pull` of it",
    "- s3dock FORMAT: `s3dock push [--format FORMAT] app:TAG` in a bucket of its own, `s3dock pull app TAG`",
    "- bytes added: the sum of the bucket's object sizes after the v2 push minus before it",
    "- stored: the sum of the bucket's object sizes after v1 of one app, and of both apps",
    "",
    header,
    align,
    row("push v2 (s)", "push", fmt),
    row("bytes added by the v2 push", "added", mib),
    row("pull v2, v1 on the host (s)", "pull", fmt),
    row("first push of v1, the whole image (s, one run)", "firstPush", fmt),
    row("stored after v1 of one app", "afterOneApp", mib),
    row("stored after v1 of two apps on the same base", "afterTwoApps", mib),
    rss,
    "",
    `The changed layer, compressed as the registry stores it (Docker's gzip): ${mib(summary.changedLayer)}.`,
    "",
    "Targets (issue 19), as this run measured them:",
    "",
    ...s3dock.flatMap((r) => targets(summary, r).map(([target, met]) => `- ${r.label}: ${met ? "met" : "**not met**"}: ${target}`)),
    LAYERS_SECTION.end,
  ].join("\n");
}

function readmeTable(summary) {
  const { registry, s3dock } = summary;
  const cell = (r, key, show) => `${show(r[key])}${r.s3dock ? ` (${ratio(r[key], registry[key])})` : ""}`;
  const row = (name, key, show) => `| ${name} | ${[registry, ...s3dock].map((r) => cell(r, key, show)).join(" | ")} |`;
  return [
    README_TABLE.begin,
    `| v2 of a ${(summary.imageBytes / MB).toFixed(0)} MB image, only its ${APP_MIB} MiB app layer changed | registry on the same S3 | ${s3dock.map((r) => r.label).join(" | ")} |`,
    `| --- | ---: |${s3dock.map(() => " ---: |").join("")}`,
    row("push", "push", (s) => `${fmt(s, 1)} s`),
    row("bytes added to the bucket", "added", mib),
    row("pull (v1 on the host)", "pull", (s) => `${fmt(s, 1)} s`),
    row(`stored for two apps on one ${BASE_MIB.reduce((a, b) => a + b, 0)} MiB base`, "afterTwoApps", mib),
    README_TABLE.end,
  ].join("\n");
}

/** Replaces the marked part of FILE with REPLACEMENT, or appends it when APPEND and there is none. */
function writeMarked(file, markers, replacement, append) {
  const text = existsSync(file) ? readFileSync(file, "utf8") : "";
  const current = markedSection(text, markers);
  if (current) {
    writeFileSync(file, text.replace(current, () => replacement));
  } else if (append) {
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, `${text ? `${text.trimEnd()}\n\n` : "# Benchmarks\n\n"}${replacement}\n`);
  } else {
    log(`${file} has no ${markers.begin} … ${markers.end}: not written`);
    return;
  }
  log(`wrote ${file}`);
}

// ── main ─────────────────────────────────────────────────────────────────────────────────────────

async function main() {
  const startedAt = new Date();
  const loadAtStart = loadavg()[0];
  ensureTools();
  const settings = s3Settings();
  ctx.workdir = mkdtempSync(join(tmpdir(), "s3dock-bench-layers-"));
  for (const signal of ["SIGINT", "SIGTERM"]) {
    process.once(signal, () => {
      log(`${signal}: cleaning up`);
      cleanUp().finally(() => process.exit(130));
    });
  }
  let measured;
  try {
    measured = await measure(settings);
  } finally {
    await cleanUp();
  }
  const summary = summarize(measured);
  printSummary(summary);
  const minutes = (Date.now() - startedAt.getTime()) / 60000;
  if (OUTPUT) writeMarked(OUTPUT, LAYERS_SECTION, markdownSection(summary, machine(), startedAt, minutes, { start: loadAtStart, end: loadavg()[0] }), true);
  if (README) writeMarked(README, README_TABLE, readmeTable(summary), false);
  log(`done in ${minutes.toFixed(1)} min`);
}

main().catch((error) => {
  console.error(error.stack ?? String(error));
  process.exitCode = 1;
});
