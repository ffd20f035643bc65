/**
 * Turns the global flags into a running setup: the resolved configuration, the logger, and the
 * service context with real clients. Commands ask for only what they use, so `config` and
 * `version` never touch S3 or Docker.
 */
import { randomBytes } from "node:crypto";
import { cpus, userInfo } from "node:os";
import { resolve } from "node:path";
import type { Logger } from "pino";
import { DockerodeContainers, type ContainerEngine } from "../clients/containers.js";
import { DockerodeEngine, type DockerEngine } from "../clients/docker.js";
import { S3ObjectStore } from "../clients/object-store.js";
import { resolveConfig, type ResolvedConfig } from "../domain/config.js";
import { defaultSearchPaths, loadConfigFile } from "../config/loader.js";
import { UsageError } from "../errors.js";
import type { ServiceContext } from "../services/context.js";
import { createLogger } from "./logger.js";
import { createProgress } from "./progress.js";
import { endpointCredentials, Redactor } from "./redact.js";
import { TOOL_VERSION } from "./version.js";

export interface GlobalOptions {
  readonly config?: string;
  readonly profile?: string;
  readonly bucket?: string;
  readonly logLevel?: string;
  readonly json?: boolean;
}

export function parseLogLevel(value: string | undefined): 1 | 2 | 3 | undefined {
  if (value === undefined) return undefined;
  if (value === "1" || value === "2" || value === "3") return Number(value) as 1 | 2 | 3;
  throw new UsageError(`invalid --log-level ${JSON.stringify(value)}: use 1 (errors), 2 (info) or 3 (debug)`);
}

function osUser(): string {
  try {
    return userInfo().username || "unknown";
  } catch {
    return process.env.USER ?? "unknown";
  }
}

export class Runtime {
  readonly config: ResolvedConfig;
  readonly logger: Logger;
  readonly json: boolean;
  private context: ServiceContext | undefined;
  private dockerEngine: DockerEngine | undefined;

  constructor(
    readonly options: GlobalOptions,
    readonly redactor: Redactor,
    readonly env: Readonly<Record<string, string | undefined>> = process.env,
    readonly cwd: string = process.cwd(),
  ) {
    this.json = options.json === true;
    const flagLevel = parseLogLevel(options.logLevel);
    redactor.add(env.AWS_SECRET_ACCESS_KEY);
    redactor.add(env.AWS_SESSION_TOKEN);
    for (const secret of endpointCredentials(env.AWS_ENDPOINT_URL)) redactor.add(secret);
    const file = loadConfigFile(options.config === undefined ? undefined : resolve(cwd, options.config), defaultSearchPaths(cwd));
    for (const profile of Object.values(file?.config.profiles ?? {})) {
      for (const secret of [profile.secret_key, ...endpointCredentials(profile.endpoint)]) redactor.add(secret);
    }
    this.config = resolveConfig({
      file,
      flags: { profile: options.profile, bucket: options.bucket, logLevel: flagLevel },
      env,
      cpuCount: cpus().length,
    });
    this.logger = createLogger(this.config.logLevel, redactor);
    for (const key of file?.unknownKeys ?? []) this.logger.warn(`${file!.path}: unknown key ${key} (ignored)`);
  }

  get docker(): DockerEngine {
    this.dockerEngine ??= new DockerodeEngine({ timeoutMs: this.config.dockerTimeoutMs, env: this.env });
    return this.dockerEngine;
  }

  /** Containers and networks, for deploy only. */
  get containers(): ContainerEngine {
    return new DockerodeContainers({ timeoutMs: this.config.dockerTimeoutMs, env: this.env });
  }

  services(): ServiceContext {
    if (this.context) return this.context;
    const { config } = this;
    const store = new S3ObjectStore({
      bucket: config.bucket,
      region: config.region,
      endpoint: config.endpoint,
      credentials: config.credentials,
      retryCount: config.retryCount,
      maxSockets: Math.max(config.transfer.concurrency * 2, 16),
      idleTimeoutMs: config.idleTimeoutMs,
      logger: this.logger,
    });
    this.context = {
      store,
      docker: this.docker,
      logger: this.logger,
      // The bucket's clock, not this host's: ages, month folders and timestamps agree across hosts.
      clock: { now: () => store.serverNow() },
      user: osUser(),
      transfer: config.transfer,
      storageFormat: config.storageFormat,
      retryCount: config.retryCount,
      progress: createProgress(!this.json && process.stderr.isTTY === true && config.logLevel > 1),
      toolVersion: `s3dock/${TOOL_VERSION.version}`,
      uniqueId: () => randomBytes(4).toString("hex"),
    };
    return this.context;
  }
}
