import semver from "semver";
import { UsageError } from "../errors.js";

/** Docker's repository-name component rule: lowercase alphanumerics joined by `.`, `_`, `__` or dashes. */
const APP_NAME = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const ENV_NAME = /^[A-Za-z0-9](?:[A-Za-z0-9_-]{0,62})$/;
const IMAGE_TAG = /^(\d{8}-\d{4})-([0-9a-f]{7})$/;
const VERSION = /^v?\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$/;
const MAX_APP_LENGTH = 128;

/** `myapp:20250721-2118-f7a5a27`: an app, the commit's time and its short hash. */
export interface ImageRef {
  readonly app: string;
  readonly gitTime: string;
  readonly gitHash: string;
}

export function parseAppName(input: string): string {
  if (input.length === 0 || input.length > MAX_APP_LENGTH || !APP_NAME.test(input)) {
    throw new UsageError(
      `invalid app name ${JSON.stringify(input)}: use lowercase letters, digits and single separators (. _ -), as in a Docker repository name`,
    );
  }
  return input;
}

export function parseEnvName(input: string): string {
  if (!ENV_NAME.test(input)) {
    throw new UsageError(
      `invalid environment name ${JSON.stringify(input)}: use letters, digits, - and _ (at most 63, starting with a letter or digit)`,
    );
  }
  return input;
}

export function isGitTime(value: string): boolean {
  const match = /^(\d{4})(\d{2})(\d{2})-(\d{2})(\d{2})$/.exec(value);
  if (!match) return false;
  const [, , month, day, hour, minute] = match.map(Number) as number[];
  return month! >= 1 && month! <= 12 && day! >= 1 && day! <= 31 && hour! <= 23 && minute! <= 59;
}

export function formatImageTag(ref: ImageRef): string {
  return `${ref.gitTime}-${ref.gitHash}`;
}

export function formatImageRef(ref: ImageRef): string {
  return `${ref.app}:${formatImageTag(ref)}`;
}

/** Parses `app:YYYYMMDD-HHMM-hash7`, the only form of image s3dock builds and stores. */
export function parseImageRef(input: string): ImageRef {
  const colon = input.lastIndexOf(":");
  const hint = `expected app:YYYYMMDD-HHMM-<hash7> (the tag s3dock build prints), got ${JSON.stringify(input)}`;
  if (colon <= 0) throw new UsageError(`invalid image reference: ${hint}`);
  const app = parseAppName(input.slice(0, colon));
  const match = IMAGE_TAG.exec(input.slice(colon + 1));
  if (!match || !isGitTime(match[1]!)) throw new UsageError(`invalid image reference: ${hint}`);
  return { app, gitTime: match[1]!, gitHash: match[2]! };
}

export function isImageRef(input: string): boolean {
  try {
    parseImageRef(input);
    return true;
  } catch {
    return false;
  }
}

/** True for `v1.2.3` / `1.2.3` style versions (semver, optional leading v), build metadata included: parseVersion refuses that. */
export function looksLikeVersion(input: string): boolean {
  return VERSION.test(input) && semver.valid(input) !== null;
}

/**
 * Validates a version and returns its canonical stored form, `v` + semver (`1.2.0` → `v1.2.0`).
 * Build metadata (`+build.1`) is refused: semver drops it, so `v1.0.0+build.1` would silently be
 * `v1.0.0`, and two builds would share one immutable version.
 */
export function parseVersion(input: string): string {
  if (!looksLikeVersion(input)) {
    throw new UsageError(`invalid version ${JSON.stringify(input)}: use semantic versioning, e.g. v1.2.0 or v2.0.0-rc.1`);
  }
  const build = VERSION.exec(input)![1];
  if (build) {
    throw new UsageError(
      `invalid version ${JSON.stringify(input)}: build metadata (${build}) is not supported, as semver ignores it and ${input.slice(0, -build.length)} would be the same version; use a pre-release (e.g. ${input.slice(0, -build.length)}-${build.slice(1)}) or a new version`,
    );
  }
  return `v${semver.valid(input)}`;
}

/** The stored spellings a version may have: ours (`v1.2.0`) first, then the bare form another tool may have written. */
export function versionSpellings(canonical: string): string[] {
  return [canonical, canonical.slice(1)];
}

/** Orders version strings newest first: semver where both parse, plain string order otherwise. */
export function compareVersionsDescending(a: string, b: string): number {
  const va = semver.valid(a);
  const vb = semver.valid(b);
  if (va && vb) return semver.rcompare(va, vb) || b.localeCompare(a);
  if (va) return -1;
  if (vb) return 1;
  return b.localeCompare(a);
}
