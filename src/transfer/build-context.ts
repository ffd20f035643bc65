/**
 * The build context as docker sends it: a tar of the context directory without what
 * .dockerignore excludes (Docker's own rules, `!` exceptions and `**` included), always keeping the
 * Dockerfile and .dockerignore, and carrying a Dockerfile that lives outside the context.
 */
import { statSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { isAbsolute, posix, relative, sep } from "node:path";
import type { Readable } from "node:stream";
import dockerignoreModule from "@balena/dockerignore";
import tarFs from "tar-fs";

// The package assigns module.exports but its types declare a default export.
const dockerignore = ((dockerignoreModule as unknown as { default?: typeof dockerignoreModule }).default ??
  dockerignoreModule) as unknown as typeof dockerignoreModule.default;

/** Where a Dockerfile from outside the context is put inside it. */
export const OUTSIDE_DOCKERFILE_NAME = ".s3dock.Dockerfile";

export interface BuildContext {
  readonly stream: Readable;
  /** The Dockerfile's path inside the context, as the engine wants it. */
  readonly dockerfile: string;
}

async function readIgnoreFile(contextDir: string): Promise<string[]> {
  try {
    return (await readFile(`${contextDir}/.dockerignore`, "utf8")).split(/\r?\n/);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw error;
  }
}

const toPosix = (path: string): string => path.split(sep).join("/");

export async function packBuildContext(contextDir: string, dockerfilePath: string): Promise<BuildContext> {
  const patterns = (await readIgnoreFile(contextDir)).map((line) => line.trim()).filter((line) => line !== "" && !line.startsWith("#"));
  const matcher = dockerignore({ ignorecase: false }).add(patterns);
  // Exception patterns as docker cleans them (no `!`, no leading or trailing slash), for its walk-into rule below.
  const exceptions = patterns
    .filter((pattern) => pattern.startsWith("!"))
    .map((pattern) => posix.normalize(pattern.slice(1).trim()).replace(/^\/+|\/+$/g, ""));
  const inside = relative(contextDir, dockerfilePath);
  const dockerfileInside = !inside.startsWith("..") && !isAbsolute(inside);
  const dockerfile = dockerfileInside ? toPosix(inside) : OUTSIDE_DOCKERFILE_NAME;
  const alwaysSent = new Set([".dockerignore", dockerfile]);
  const outsideDockerfile = dockerfileInside ? undefined : await readFile(dockerfilePath);

  const stream = tarFs.pack(contextDir, {
    ignore: (name: string) => {
      const path = toPosix(relative(contextDir, name));
      if (path === "" || alwaysSent.has(path)) return false;
      if (!matcher.ignores(path)) return false;
      // An excluded directory holding the Dockerfile is walked into all the same; its other files are filtered one by one.
      if (dockerfile.startsWith(`${path}/`)) return false;
      // Docker walks into an excluded directory only when an exception pattern starts with it (`!logs/keep.log` for `logs`).
      return !(statSync(name).isDirectory() && exceptions.some((pattern) => `${pattern}/`.startsWith(`${path}/`)));
    },
    finalize: outsideDockerfile === undefined,
    finish: (pack) => {
      if (outsideDockerfile === undefined) return;
      pack.entry({ name: OUTSIDE_DOCKERFILE_NAME, mode: 0o644 }, outsideDockerfile);
      pack.finalize();
    },
  });
  return { stream: stream as unknown as Readable, dockerfile };
}
