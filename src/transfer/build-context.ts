/**
 * The build context as docker sends it: a tar of the context directory without what
 * .dockerignore excludes (Docker's own rules, `!` exceptions and `**` included), always keeping the
 * Dockerfile and .dockerignore, and carrying a Dockerfile that lives outside the context.
 */
import { statSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { isAbsolute, relative, sep } from "node:path";
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
  const hasExceptions = patterns.some((pattern) => pattern.startsWith("!"));
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
      // An excluded directory may still hold files a `!` pattern re-includes: walk into it then, filtering its files.
      return !(hasExceptions && statSync(name).isDirectory());
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
