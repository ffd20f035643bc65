/** Finds and reads the JSON5 configuration file, validating it against the schema. */
import { closeSync, constants, fstatSync, openSync, readSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import JSON5 from "json5";
import { ConfigError } from "../errors.js";
import { configFileSchema, type ConfigFile } from "../domain/config.js";

export interface LoadedConfigFile {
  readonly path: string;
  readonly config: ConfigFile;
  /** Keys the schema does not know, as dotted paths: reported as warnings, then ignored. */
  readonly unknownKeys: readonly string[];
}

/** Where s3dock looks for a config file when none is named, first match wins. */
export function defaultSearchPaths(cwd: string, home = homedir()): string[] {
  return [join(cwd, "s3dock.json5"), join(home, ".s3dock", "config.json5"), "/etc/s3dock/config.json5"];
}

/** A config file is a few KiB; anything larger is not one (and reading it whole could exhaust memory). */
export const MAX_CONFIG_BYTES = 1024 * 1024;

/**
 * Reads a regular file of at most MAX_CONFIG_BYTES; undefined when nothing is there. The checks are
 * made on the opened descriptor, so what is checked is what is read: O_NONBLOCK keeps the open of a
 * FIFO from waiting for a writer, and the read stops one byte past the limit whatever fstat said.
 */
function readIfExists(path: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return undefined;
    throw new ConfigError(`cannot read config file ${path}: ${(error as Error).message}`);
  }
  try {
    const stats = fstatSync(fd);
    if (!stats.isFile()) {
      const kind = stats.isDirectory() ? "a directory" : stats.isFIFO() ? "a FIFO" : stats.isCharacterDevice() || stats.isBlockDevice() ? "a device" : "not a regular file";
      throw new ConfigError(`config file ${path} is ${kind}: give a regular file`);
    }
    const tooLarge = () => new ConfigError(`config file ${path} is larger than ${MAX_CONFIG_BYTES / 1024} KiB: that is not an s3dock config file`);
    if (stats.size > MAX_CONFIG_BYTES) throw tooLarge();
    const buffer = Buffer.alloc(MAX_CONFIG_BYTES + 1);
    let filled = 0;
    for (let read = 1; read > 0 && filled < buffer.length; filled += read) read = readSync(fd, buffer, filled, buffer.length - filled, null);
    if (filled > MAX_CONFIG_BYTES) throw tooLarge();
    return buffer.toString("utf8", 0, filled);
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    throw new ConfigError(`cannot read config file ${path}: ${(error as Error).message}`);
  } finally {
    closeSync(fd);
  }
}

function dropKeys(value: unknown, path: readonly PropertyKey[], keys: readonly string[]): void {
  let node = value as Record<PropertyKey, unknown>;
  for (const segment of path) node = node[segment] as Record<PropertyKey, unknown>;
  for (const key of keys) delete node[key];
}

export function parseConfigText(text: string, path: string): LoadedConfigFile {
  let raw: unknown;
  try {
    raw = JSON5.parse(text);
  } catch (error) {
    const { lineNumber, columnNumber, message } = error as { lineNumber?: number; columnNumber?: number; message: string };
    const where = lineNumber ? ` at line ${lineNumber}, column ${columnNumber}` : "";
    throw new ConfigError(`invalid JSON5 in ${path}${where}: ${message.replace(/^JSON5: /, "")}`);
  }
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw new ConfigError(`invalid config file ${path}: the top level must be an object`);
  }
  const unknownKeys: string[] = [];
  for (;;) {
    const result = configFileSchema.safeParse(raw);
    if (result.success) return { path, config: result.data, unknownKeys };
    const problems = result.error.issues;
    const unrecognized = problems.filter((issue) => issue.code === "unrecognized_keys");
    if (unrecognized.length < problems.length) {
      const issue = problems.find((p) => p.code !== "unrecognized_keys")!;
      const field = issue.path.join(".") || "(top level)";
      throw new ConfigError(`invalid config file ${path}: ${field}: ${issue.message}`);
    }
    for (const issue of unrecognized) {
      const keys = (issue as { keys: string[] }).keys;
      unknownKeys.push(...keys.map((key) => [...issue.path, key].join(".")));
      dropKeys(raw, issue.path, keys);
    }
  }
}

/**
 * The named file (which must exist), or the first of the search paths that exists, or undefined
 * when there is none: the built-in defaults apply then.
 */
export function loadConfigFile(explicitPath: string | undefined, searchPaths: readonly string[]): LoadedConfigFile | undefined {
  if (explicitPath !== undefined) {
    const path = resolve(explicitPath);
    const text = readIfExists(path);
    if (text === undefined) throw new ConfigError(`config file ${path} does not exist`);
    return parseConfigText(text, path);
  }
  for (const path of searchPaths) {
    const text = readIfExists(path);
    if (text !== undefined) return parseConfigText(text, path);
  }
  return undefined;
}
