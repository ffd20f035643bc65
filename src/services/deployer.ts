/**
 * deploy --blue-green and deploy --rollback on one Docker engine, with no proxy of our own.
 *
 * Network mode (the default): both colors join a user-defined network; the new container starts
 * beside the live one with only its color alias, the engine's health check decides, then it is
 * reconnected with the stable alias that proxies resolve through Docker's DNS, both serve for
 * `drain_seconds`, and the old one leaves the network, stops and is removed.
 *
 * Publish mode (`publish: "8080:8080"`): a host port cannot be shared, so the old container stops
 * before the new one starts; the gap is the new container's start plus its health check. When the
 * new one fails, the old one is started again.
 *
 * The state lives on the containers (s3dock.* labels), so any machine using the engine knows which
 * color is live and which image came before.
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import type { ContainerEngine, ContainerSpec, ContainerSummary, HealthCheckSpec } from "../clients/containers.js";
import { containerName, deploySettingsFor, deploymentName, legacyAlias, type DeployConfig, type DeploySettings } from "../domain/deploy-config.js";
import { formatImageTag, parseAppName, parseEnvName, parseImageRef } from "../domain/names.js";
import { ConfigError, ConflictError, NotFoundError, OperationError } from "../errors.js";
import { AuditLog } from "./audit.js";
import { ImageCatalog } from "./catalog.js";
import type { ServiceContext } from "./context.js";
import { DeployLock } from "./deploy-lock.js";
import { Promoter } from "./promoter.js";
import { Puller } from "./puller.js";
import { References } from "./references.js";

export const LABELS = {
  app: "s3dock.app",
  env: "s3dock.env",
  color: "s3dock.color",
  image: "s3dock.image",
  previousImage: "s3dock.previous-image",
  deployedAt: "s3dock.deployed-at",
  deployedBy: "s3dock.deployed-by",
} as const;

export type Color = "blue" | "green";

export const DEFAULT_NETWORK = "s3dock";
const DEFAULT_HEALTH_TIMEOUT_S = 60;
const DEFAULT_HEALTH_INTERVAL_S = 1;
const PROBE_TIMEOUT_MS = 5000;
const PROBE_RETRIES = 3;
/** With no health check at all, "still running after this long" is the check. */
const GRACE_MS = 3000;
const DEFAULT_DRAIN_S = 2;
const DEFAULT_STOP_TIMEOUT_S = 10;
const POLL_MS = 250;
const LOG_TAIL_LINES = 20;

export interface DeployOptions {
  /** Overrides health.timeout_seconds. */
  readonly timeoutSeconds?: number;
  /** How long to wait for another deploy of the same app and env (0: refuse at once). */
  readonly waitLockSeconds?: number;
}

export interface DeployResult {
  readonly app: string;
  readonly env: string;
  readonly image: string;
  readonly previous_image: string | undefined;
  readonly color: Color;
  readonly container: string;
  readonly health_check_ms: number;
  readonly skipped: boolean;
  readonly mode: "network" | "publish";
  readonly engine: string;
  /** Rollback only: whether the env pointer was moved back too. */
  readonly pointer_moved?: boolean;
}

/** What the deploy does for an app and env, with every default filled in. */
export interface ResolvedDeploySettings {
  readonly mode: "network" | "publish";
  readonly network: string | undefined;
  readonly alias: string;
  /** Whether the alias is the default one (a live container deployed by an earlier version may still carry the old default). */
  readonly defaultAlias: boolean;
  readonly healthCheck: HealthCheckSpec | undefined;
  readonly healthTimeoutMs: number;
  readonly drainMs: number;
  readonly stopTimeoutSeconds: number;
  readonly container: Omit<ContainerSpec, "name" | "image" | "labels" | "network" | "healthCheck">;
}

const MEMORY_UNITS: Record<string, number> = { "": 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

export function parseMemory(value: string): number {
  const match = /^(\d+)([bkmg]?)$/i.exec(value)!;
  return Number(match[1]) * MEMORY_UNITS[match[2]!.toLowerCase()]!;
}

/** `KEY=VALUE` lines; blank lines and `#` comments skipped, as `docker run --env-file` reads them. */
export function parseEnvFile(text: string): string[] {
  return text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"))
    .map((line) => (line.includes("=") ? line : `${line}=${process.env[line] ?? ""}`));
}

export function resolveDeploySettings(
  settings: DeploySettings,
  app: string,
  env: string,
  options: DeployOptions,
  readFile: (path: string) => string = (path) => readFileSync(resolve(path), "utf8"),
): ResolvedDeploySettings {
  const where = `deploy.apps.${app}`;
  const health = settings.health ?? {};
  const intervalMs = (health.interval_seconds ?? DEFAULT_HEALTH_INTERVAL_S) * 1000;
  let probe: readonly string[] | undefined;
  if (health.command) probe = ["CMD", ...health.command];
  else if (health.http_path) {
    if (!settings.port) throw new ConfigError(`${where}: health.http_path needs the app's port (set ${where}.port)`);
    probe = ["CMD", "wget", "-q", "-O", "/dev/null", `http://127.0.0.1:${settings.port}${health.http_path}`];
  }
  let publish: ContainerSpec["publish"];
  if (settings.publish) {
    const parts = settings.publish.split(":");
    const containerPort = Number(parts.pop());
    const hostPort = Number(parts.pop());
    publish = { containerPort, hostPort, ...(parts[0] ? { hostIp: parts[0] } : {}) };
  }
  let fileEnv: string[] = [];
  if (settings.env_file) {
    try {
      fileEnv = parseEnvFile(readFile(settings.env_file));
    } catch (error) {
      throw new ConfigError(`${where}.env_file: cannot read ${settings.env_file}: ${(error as Error).message}`);
    }
  }
  const stopTimeoutSeconds = settings.stop_timeout_seconds ?? DEFAULT_STOP_TIMEOUT_S;
  const timeoutSeconds = options.timeoutSeconds ?? health.timeout_seconds ?? DEFAULT_HEALTH_TIMEOUT_S;
  return {
    mode: publish ? "publish" : "network",
    // Publish mode needs no network; network mode without one uses a shared default.
    network: settings.network ?? (publish ? undefined : DEFAULT_NETWORK),
    alias: settings.alias ?? deploymentName(app, env),
    defaultAlias: settings.alias === undefined,
    healthCheck: probe ? { test: probe, intervalMs, timeoutMs: Math.max(intervalMs, PROBE_TIMEOUT_MS), retries: PROBE_RETRIES } : undefined,
    healthTimeoutMs: timeoutSeconds * 1000,
    drainMs: (settings.drain_seconds ?? DEFAULT_DRAIN_S) * 1000,
    stopTimeoutSeconds,
    container: {
      // The env map wins over the file, as a later --env beats --env-file.
      env: [...fileEnv, ...Object.entries(settings.env ?? {}).map(([key, value]) => `${key}=${value}`)],
      ...(settings.command ? { command: settings.command } : {}),
      ...(publish ? { publish } : {}),
      ...(settings.volumes ? { binds: settings.volumes } : {}),
      restart: settings.restart ?? "unless-stopped",
      ...(settings.memory ? { memoryBytes: parseMemory(settings.memory) } : {}),
      ...(settings.cpus ? { nanoCpus: Math.round(settings.cpus * 1e9) } : {}),
      ...(settings.user ? { user: settings.user } : {}),
      stopTimeoutSeconds,
    },
  };
}

/** The failure of a new container, with what the operator needs to see. */
class UnhealthyError extends OperationError {}

export class Deployer {
  private readonly references: References;
  private readonly audit: AuditLog;
  private readonly lock: DeployLock;
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(
    private readonly ctx: ServiceContext,
    private readonly engine: ContainerEngine,
    private readonly config: DeployConfig,
    options: { sleep?: (ms: number) => Promise<void> } = {},
  ) {
    this.references = new References(ctx.store, new ImageCatalog(ctx.store));
    this.audit = new AuditLog(ctx);
    this.sleep = options.sleep ?? ((ms) => new Promise((done) => setTimeout(done, ms)));
    this.lock = new DeployLock(engine, ctx.clock, (message) => ctx.logger.warn(message), this.sleep);
  }

  /** Deploys the image the environment's pointer names. */
  async deploy(appInput: string, envInput: string, options: DeployOptions = {}): Promise<DeployResult> {
    const app = parseAppName(appInput);
    const env = parseEnvName(envInput);
    const { image } = await this.references.resolvePointer(app, env);
    await this.ensureLoaded(image.name);
    const result = await this.underLock(app, env, image.name, options, async (live) =>
      this.switchTo(app, env, image.name, live?.labels[LABELS.image], live, options),
    ).catch((error: unknown) => this.recordFailure("deploy", app, env, image.name, error));
    if (!result.skipped) await this.record("deploy", result);
    return result;
  }

  /** Goes back to the image the live container replaced, and moves the env pointer back to it. */
  async rollback(appInput: string, envInput: string, options: DeployOptions = {}): Promise<DeployResult> {
    const app = parseAppName(appInput);
    const env = parseEnvName(envInput);
    const before = await this.live(app, env);
    if (!before) throw new NotFoundError(`nothing of ${app} ${env} is running on ${this.engine.address}: there is nothing to roll back`);
    const previous = before.labels[LABELS.previousImage];
    if (!previous) {
      throw new NotFoundError(`the live container ${before.name} records no previous image (it was the first deploy of ${app} ${env})`);
    }
    await this.ensureLoaded(previous);
    const deployed = await this.underLock(app, env, previous, options, async (live) => {
      if (live?.id !== before.id) throw new OperationError(`another deploy of ${app} ${env} finished while this rollback started: nothing was changed; look again and retry`);
      return this.switchTo(app, env, previous, live.labels[LABELS.image], live, options);
    }).catch((error: unknown) => this.recordFailure("rollback", app, env, previous, error));
    let pointerMoved = false;
    try {
      const promoted = await new Promoter(this.ctx).promote({ image: previous }, env);
      pointerMoved = !promoted.skipped;
    } catch (error) {
      this.ctx.logger.warn(`${previous} is live again, but the pointer of ${env} could not be moved back: ${(error as Error).message} (run: s3dock promote ${previous} ${env})`);
    }
    const result = { ...deployed, pointer_moved: pointerMoved };
    await this.record("rollback", result);
    return result;
  }

  /** The running container of the app and env that was deployed last, if any. */
  async live(app: string, env: string): Promise<ContainerSummary | undefined> {
    const containers = await this.engine.listContainers({ [LABELS.app]: app, [LABELS.env]: env });
    return containers
      .filter((c) => c.running)
      .sort((a, b) => (b.labels[LABELS.deployedAt] ?? "").localeCompare(a.labels[LABELS.deployedAt] ?? ""))[0];
  }

  private async ensureLoaded(image: string): Promise<void> {
    if (await this.ctx.docker.inspectImage(image)) return;
    const ref = parseImageRef(image);
    this.ctx.logger.info(`${image} is not in the engine: pulling it`);
    await new Puller(this.ctx).pull(ref.app, formatImageTag(ref));
  }

  private async underLock(
    app: string,
    env: string,
    lockImage: string,
    options: DeployOptions,
    work: (live: ContainerSummary | undefined) => Promise<DeployResult>,
  ): Promise<DeployResult> {
    const held = await this.lock.acquire(app, env, lockImage, this.ctx.user, (options.waitLockSeconds ?? 0) * 1000);
    try {
      return await work(await this.live(app, env));
    } finally {
      await held.release().catch((error: unknown) => this.ctx.logger.warn(`could not release the deploy lock: ${(error as Error).message}`));
    }
  }

  private async switchTo(
    app: string,
    env: string,
    image: string,
    previousImage: string | undefined,
    live: ContainerSummary | undefined,
    options: DeployOptions,
  ): Promise<DeployResult> {
    const { logger, clock, user } = this.ctx;
    // With neither health.command nor health.http_path, the image's own HEALTHCHECK (if any) decides.
    const settings = resolveDeploySettings(deploySettingsFor(this.config, app, env), app, env, options);
    const liveColor = live?.labels[LABELS.color] as Color | undefined;
    const base = { app, env, image, previous_image: previousImage, mode: settings.mode, engine: this.engine.address };
    if (live && live.labels[LABELS.image] === image) {
      logger.info(`${image} is already live on ${liveColor ?? live.name}: nothing to do`);
      return { ...base, previous_image: live.labels[LABELS.previousImage], color: liveColor ?? "blue", container: live.name, health_check_ms: 0, skipped: true };
    }
    const color: Color = liveColor === "blue" ? "green" : "blue";
    const name = containerName(app, env, color);
    const colorAlias = `${settings.alias}.${color}`;
    const aliases = [settings.alias, colorAlias, ...(await this.carriedOverAlias(app, env, live, settings))];
    await this.removeLeftover(app, env, name);
    if (settings.network && !(await this.engine.networkExists(settings.network))) {
      logger.info(`creating the Docker network ${settings.network}`);
      await this.engine.createNetwork(settings.network);
    }
    let id: string;
    try {
      id = await this.engine.createContainer({
        ...settings.container,
        name,
        image,
        labels: {
          [LABELS.app]: app,
          [LABELS.env]: env,
          [LABELS.color]: color,
          [LABELS.image]: image,
          ...(previousImage ? { [LABELS.previousImage]: previousImage } : {}),
          [LABELS.deployedAt]: clock.now().toISOString(),
          [LABELS.deployedBy]: user,
        },
        ...(settings.network ? { network: { name: settings.network, aliases: [colorAlias] } } : {}),
        ...(settings.healthCheck ? { healthCheck: settings.healthCheck } : {}),
      });
    } catch (error) {
      if (!(error instanceof ConflictError)) throw error;
      throw new ConflictError(`a container named ${name} exists, and its labels do not say it belongs to ${app} ${env}: not touching it (rename or remove it: docker rm ${name})`, { cause: error });
    }
    const healthMs = settings.mode === "publish" ? await this.startPublished(id, name, live, settings) : await this.startBeside(id, name, settings);
    if (settings.network) {
      // Docker cannot add an alias to an attachment: reconnect the new container with the stable alias.
      await this.engine.disconnectNetwork(settings.network, id);
      await this.engine.connectNetwork(settings.network, id, aliases);
      if (live && settings.mode === "network") {
        logger.info(`${name} serves ${settings.alias}; draining ${live.name} for ${settings.drainMs / 1000}s`);
        await this.sleep(settings.drainMs);
        await this.engine.disconnectNetwork(settings.network, live.id).catch(() => undefined);
      }
    }
    await this.retireOthers(app, env, id, settings.stopTimeoutSeconds);
    logger.info(`${image} is live on ${color} (${name})`);
    return { ...base, color, container: name, health_check_ms: healthMs, skipped: false };
  }

  /**
   * A container of the new color left by a failed or interrupted deploy of this app and env (the
   * live one has the other color). Only one whose labels say so is removed: a container of another
   * app that happens to have the name is not ours.
   */
  private async removeLeftover(app: string, env: string, name: string): Promise<void> {
    const leftover = (await this.engine.listContainers({ [LABELS.app]: app, [LABELS.env]: env })).find((c) => c.name === name);
    if (leftover) await this.engine.removeContainer(leftover.id);
  }

  /**
   * Earlier versions gave live containers the alias `{app}-{env}` by default, which two apps can share.
   * While the live container still answers to it, the new one does too, so proxies that resolve it
   * keep working through the upgrade; the warning says how to move off it.
   */
  private async carriedOverAlias(app: string, env: string, live: ContainerSummary | undefined, settings: ResolvedDeploySettings): Promise<string[]> {
    if (!live || !settings.network || !settings.defaultAlias) return [];
    const old = legacyAlias(app, env);
    const state = await this.engine.inspectContainer(live.id);
    if (!state?.networks[settings.network]?.includes(old)) return [];
    this.ctx.logger.warn(
      `${live.name} answers to ${old}, the default alias of earlier s3dock versions, which two apps can share (web-api prod and web api-prod were both web-api-prod); ` +
        `the new container keeps it beside ${settings.alias}: point proxies at ${settings.alias}, or set deploy.apps.${app}.alias`,
    );
    return [old];
  }

  /** Network mode: the new container starts beside the live one, which keeps serving throughout. */
  private async startBeside(id: string, name: string, settings: ResolvedDeploySettings): Promise<number> {
    try {
      await this.engine.startContainer(id);
      return await this.waitHealthy(id, name, settings);
    } catch (error) {
      await this.engine.removeContainer(id).catch(() => undefined);
      throw error;
    }
  }

  /** Publish mode: the port is free only once the old container stops; a failed start brings it back. */
  private async startPublished(id: string, name: string, live: ContainerSummary | undefined, settings: ResolvedDeploySettings): Promise<number> {
    if (live) await this.engine.stopContainer(live.id, settings.stopTimeoutSeconds);
    try {
      await this.engine.startContainer(id);
      return await this.waitHealthy(id, name, settings);
    } catch (error) {
      await this.engine.removeContainer(id).catch(() => undefined);
      if (live) {
        this.ctx.logger.warn(`starting ${live.name} again`);
        await this.engine.startContainer(live.id);
      }
      throw error;
    }
  }

  /** Stops and removes every container of the app and env but the new one. */
  private async retireOthers(app: string, env: string, keepId: string, stopTimeoutSeconds: number): Promise<void> {
    const others = (await this.engine.listContainers({ [LABELS.app]: app, [LABELS.env]: env })).filter((c) => c.id !== keepId);
    for (const other of others) {
      if (other.running) await this.engine.stopContainer(other.id, stopTimeoutSeconds);
      await this.engine.removeContainer(other.id);
      this.ctx.logger.info(`removed ${other.name} (${other.labels[LABELS.image] ?? other.image})`);
    }
  }

  /** Healthy per the engine's health check, or, with none, still running after a grace period. */
  private async waitHealthy(id: string, name: string, settings: ResolvedDeploySettings): Promise<number> {
    const started = this.ctx.clock.now().getTime();
    const elapsed = () => this.ctx.clock.now().getTime() - started;
    for (;;) {
      const state = await this.engine.inspectContainer(id);
      if (!state) throw new UnhealthyError(`${name} disappeared while starting`);
      if (!state.running || state.restartCount > 0) {
        throw await this.unhealthy(id, name, `exited with code ${state.exitCode}`, undefined);
      }
      if (state.health?.status === "healthy") return elapsed();
      if (state.health?.status === "unhealthy") throw await this.unhealthy(id, name, "failed its health check", state.health.lastOutput);
      if (!state.health && elapsed() >= Math.min(GRACE_MS, settings.healthTimeoutMs)) return elapsed();
      if (elapsed() >= settings.healthTimeoutMs) {
        throw await this.unhealthy(id, name, `was not healthy within ${settings.healthTimeoutMs / 1000}s`, state.health?.lastOutput);
      }
      await this.sleep(POLL_MS);
    }
  }

  private async unhealthy(id: string, name: string, what: string, lastOutput: string | undefined): Promise<UnhealthyError> {
    const logs = await this.engine.logsTail(id, LOG_TAIL_LINES).catch(() => "");
    return new UnhealthyError(`the new container ${name} ${what}; the live container keeps serving`, {
      details: [`last health check output: ${lastOutput ? lastOutput : "(none)"}`, logs ? `last ${LOG_TAIL_LINES} log lines:\n${logs}` : "no log output"],
    });
  }

  /** A new container that failed its health check is worth an audit event too; then the error goes on. */
  private async recordFailure(event: "deploy" | "rollback", app: string, env: string, image: string, error: unknown): Promise<never> {
    if (error instanceof UnhealthyError) {
      const ref = parseImageRef(image);
      await this.audit.record(event, { app, gitHash: ref.gitHash, gitTime: ref.gitTime }, {
        environment: env,
        image_reference: image,
        result: "failed",
        reason: error.message,
        engine: this.engine.address,
      });
    }
    throw error;
  }

  private async record(event: "deploy" | "rollback", result: DeployResult): Promise<void> {
    const ref = parseImageRef(result.image);
    await this.audit.record(event, { app: result.app, gitHash: ref.gitHash, gitTime: ref.gitTime }, {
      environment: result.env,
      image_reference: result.image,
      ...(result.previous_image ? { previous_image: result.previous_image } : {}),
      color: result.color,
      container: result.container,
      mode: result.mode,
      engine: result.engine,
      health_check_ms: result.health_check_ms,
      ...(result.pointer_moved !== undefined ? { pointer_moved: result.pointer_moved } : {}),
    });
  }
}
