/**
 * The configuration file's schema and how flags, environment and file resolve into the settings a
 * command runs with. Pure: reading files is the loader's job.
 */
import { z } from "zod";
import { ConfigError } from "../errors.js";
import { deployConfigSchema, type DeployConfig } from "./deploy-config.js";

export const DEFAULT_BUCKET = "s3dock-containers";
export const DEFAULT_REGION = "us-east-1";
export const DEFAULT_PROFILE = "default";
/** Chosen by `make bench`: level 1 on all cores beats level 6 by far for a small size cost (docs/benchmarks.md). */
export const DEFAULT_GZIP_LEVEL = 1;
/** Well above the images the Go tool pushes (it holds each compressed image in memory), well below a disk. */
export const DEFAULT_MAX_IMAGE_MB_WITHOUT_SIZE = 8192;

const profileSchema = z.strictObject({
  bucket: z.string().min(3).max(63).optional(),
  region: z.string().min(1).optional(),
  endpoint: z.url().optional(),
  access_key: z.string().min(1).optional(),
  secret_key: z.string().min(1).optional(),
});

export const configFileSchema = z.strictObject({
  default_profile: z.string().min(1).optional(),
  profiles: z.record(z.string(), profileSchema).optional(),
  docker: z
    .strictObject({
      timeout: z.union([z.string(), z.number()]).optional(),
      compression: z
        .string()
        .regex(/^(gzip|none)(:[0-9])?$/, 'use "gzip" or "gzip:0" … "gzip:9"')
        .optional(),
    })
    .optional(),
  // Parsed by the Go tool and never used; accepted so its files load unchanged.
  naming: z.record(z.string(), z.unknown()).optional(),
  defaults: z
    .strictObject({
      retry_count: z.number().int().min(0).max(20).optional(),
      // The Go tool's files spell levels as words ("debug"); ours also take 1-3 like --log-level.
      log_level: z.union([z.literal(1), z.literal(2), z.literal(3), z.enum(["error", "warn", "info", "debug"])]).optional(),
    })
    .optional(),
  transfer: z
    .strictObject({
      part_size_mb: z.number().int().min(5).max(1024).optional(),
      concurrency: z.number().int().min(1).max(64).optional(),
      chunk_size_mb: z.number().int().min(1).max(64).optional(),
      compression_workers: z.number().int().min(1).max(64).optional(),
      max_image_mb_without_size: z.number().int().min(1).optional(),
      idle_timeout: z.union([z.string(), z.number()]).optional(),
    })
    .optional(),
  storage: z
    .strictObject({
      format: z.enum(["layers", "archive"]).optional(),
    })
    .optional(),
  deploy: deployConfigSchema.optional(),
});
export type ConfigFile = z.infer<typeof configFileSchema>;

/** "layers": content-addressed blobs shared across images (the default); "archive": one Go-compatible .tar.gz per image. */
export type StorageFormat = "layers" | "archive";

export interface TransferSettings {
  readonly partSizeBytes: number;
  readonly concurrency: number;
  readonly chunkSizeBytes: number;
  readonly compressionWorkers: number;
  readonly gzipLevel: number;
  /**
   * The most a pull decompresses when the metadata records no uncompressed size (images the Go tool
   * pushed); with one recorded, that size is the limit.
   */
  readonly maxImageBytesWithoutSize: number;
}

export interface ResolvedConfig {
  readonly profile: string;
  readonly configFile: string | undefined;
  readonly bucket: string;
  readonly region: string;
  readonly endpoint: string | undefined;
  readonly credentials: { readonly accessKeyId: string; readonly secretAccessKey: string } | undefined;
  readonly retryCount: number;
  readonly logLevel: 1 | 2 | 3;
  readonly transfer: TransferSettings;
  readonly storageFormat: StorageFormat;
  readonly dockerTimeoutMs: number | undefined;
  /** An S3 connection that sends or receives nothing for this long fails, and the request is retried. */
  readonly idleTimeoutMs: number;
  readonly deploy: DeployConfig;
  readonly profiles: readonly string[];
  readonly defaultProfile: string;
}

export interface ResolveInput {
  readonly file?: { readonly path: string; readonly config: ConfigFile };
  readonly flags: { readonly profile?: string; readonly bucket?: string; readonly logLevel?: 1 | 2 | 3 };
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly cpuCount: number;
}

const MiB = 1024 * 1024;
export const DEFAULT_IDLE_TIMEOUT_MS = 30_000;

/** `30s`, `5m`, `2h`, `1500ms` or a number of seconds. */
export function parseDuration(value: string | number, what: string): number {
  if (typeof value === "number") return value * 1000;
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(value.trim());
  if (!match) throw new ConfigError(`${what}: invalid duration ${JSON.stringify(value)} (use e.g. 30s, 5m, 2h)`);
  const factor = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] ?? "s"]!;
  return Number(match[1]) * factor;
}

function gzipLevel(compression: string | undefined): number {
  if (!compression) return DEFAULT_GZIP_LEVEL;
  const [kind, level] = compression.split(":");
  if (kind === "none") return 0;
  return level === undefined ? DEFAULT_GZIP_LEVEL : Number(level);
}

function idleTimeout(value: string | number | undefined): number {
  if (value === undefined) return DEFAULT_IDLE_TIMEOUT_MS;
  const ms = parseDuration(value, "transfer.idle_timeout");
  if (ms < 100) throw new ConfigError(`transfer.idle_timeout: ${JSON.stringify(value)} is too short (at least 100ms)`);
  return ms;
}

function logLevelNumber(level: 1 | 2 | 3 | "error" | "warn" | "info" | "debug" | undefined): 1 | 2 | 3 | undefined {
  if (typeof level !== "string") return level;
  return level === "debug" ? 3 : level === "error" ? 1 : 2;
}

function storageFormat(value: string | undefined): StorageFormat | undefined {
  if (value === undefined || value === "layers" || value === "archive") return value;
  throw new ConfigError(`S3DOCK_STORAGE_FORMAT: ${JSON.stringify(value)} is not a storage format (use "layers" or "archive")`);
}

const nonEmpty = (value: string | undefined): string | undefined => (value === undefined || value === "" ? undefined : value);

export function resolveConfig(input: ResolveInput): ResolvedConfig {
  const { file, flags, env } = input;
  const config = file?.config ?? {};
  const profiles = config.profiles ?? {};
  const knownProfiles = Object.keys(profiles).sort();
  const defaultProfile = config.default_profile ?? DEFAULT_PROFILE;
  const requested = nonEmpty(flags.profile) ?? nonEmpty(env.S3DOCK_PROFILE);
  const profileName = requested ?? defaultProfile;

  if (config.default_profile && knownProfiles.length > 0 && !Object.hasOwn(profiles, config.default_profile)) {
    throw new ConfigError(
      `${file!.path}: default_profile ${JSON.stringify(config.default_profile)} is not among the profiles (${knownProfiles.join(", ")})`,
    );
  }
  // Own keys only: `--profile constructor` must not find Object.prototype's.
  const profile = Object.hasOwn(profiles, profileName) ? profiles[profileName] : undefined;
  if (!profile && (requested !== undefined || knownProfiles.length > 0) && profileName !== DEFAULT_PROFILE) {
    const known = knownProfiles.length > 0 ? knownProfiles.join(", ") : "none";
    const where = file ? `in ${file.path}` : "(no config file found)";
    throw new ConfigError(`unknown profile ${JSON.stringify(profileName)} ${where}; known profiles: ${known}`);
  }

  const accessKeyId = nonEmpty(env.AWS_ACCESS_KEY_ID) ?? profile?.access_key;
  const secretAccessKey = nonEmpty(env.AWS_SECRET_ACCESS_KEY) ?? profile?.secret_key;
  if ((accessKeyId === undefined) !== (secretAccessKey === undefined)) {
    throw new ConfigError(
      `profile ${JSON.stringify(profileName)}: ${accessKeyId ? "an access key is set but no secret key" : "a secret key is set but no access key"} (set both, or neither to use the AWS credential chain)`,
    );
  }

  const transfer = config.transfer ?? {};
  const workers = transfer.compression_workers ?? Math.max(1, input.cpuCount);
  return {
    profile: profileName,
    configFile: file?.path,
    bucket: nonEmpty(flags.bucket) ?? nonEmpty(env.S3DOCK_BUCKET) ?? profile?.bucket ?? DEFAULT_BUCKET,
    region: nonEmpty(env.AWS_REGION) ?? profile?.region ?? DEFAULT_REGION,
    endpoint: nonEmpty(env.AWS_ENDPOINT_URL) ?? profile?.endpoint,
    credentials: accessKeyId && secretAccessKey ? { accessKeyId, secretAccessKey } : undefined,
    retryCount: config.defaults?.retry_count ?? 3,
    logLevel: flags.logLevel ?? logLevelNumber(config.defaults?.log_level) ?? 2,
    transfer: {
      partSizeBytes: (transfer.part_size_mb ?? 5) * MiB,
      concurrency: transfer.concurrency ?? 4,
      chunkSizeBytes: (transfer.chunk_size_mb ?? 4) * MiB,
      compressionWorkers: workers,
      gzipLevel: gzipLevel(config.docker?.compression),
      maxImageBytesWithoutSize: (transfer.max_image_mb_without_size ?? DEFAULT_MAX_IMAGE_MB_WITHOUT_SIZE) * MiB,
    },
    storageFormat: storageFormat(nonEmpty(env.S3DOCK_STORAGE_FORMAT)) ?? config.storage?.format ?? "layers",
    dockerTimeoutMs:
      config.docker?.timeout === undefined ? undefined : parseDuration(config.docker.timeout, "docker.timeout"),
    idleTimeoutMs: idleTimeout(transfer.idle_timeout),
    deploy: config.deploy ?? {},
    profiles: knownProfiles,
    defaultProfile,
  };
}
