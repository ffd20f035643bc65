/** Containers and networks of the Docker engine, as `deploy` sees them, and their implementation over dockerode. */
import Docker from "dockerode";
import { ConflictError, NotFoundError, RemoteError, S3dockError } from "../errors.js";
import { dockerAddress } from "./docker.js";

export interface ContainerSummary {
  readonly id: string;
  /** Without the leading slash. */
  readonly name: string;
  readonly image: string;
  readonly imageId: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly running: boolean;
  readonly created: Date;
}

export interface ContainerState {
  readonly id: string;
  readonly running: boolean;
  /** "created", "running", "exited", ... */
  readonly status: string;
  readonly exitCode: number;
  readonly restartCount: number;
  readonly startedAt: Date | undefined;
  /** The engine's health verdict, or undefined when the container has no health check. */
  readonly health: { readonly status: "starting" | "healthy" | "unhealthy"; readonly lastOutput: string | undefined } | undefined;
  /** Network name → aliases of this container on it. */
  readonly networks: Readonly<Record<string, readonly string[]>>;
}

export interface HealthCheckSpec {
  /** Docker's form: ["CMD", ...argv] or ["CMD-SHELL", "..."]. */
  readonly test: readonly string[];
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly retries: number;
}

export interface ContainerSpec {
  readonly name: string;
  readonly image: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly env?: readonly string[];
  readonly command?: readonly string[];
  readonly healthCheck?: HealthCheckSpec;
  /** The network joined at creation, with these aliases. */
  readonly network?: { readonly name: string; readonly aliases: readonly string[] };
  /** `containerPort/tcp` → host port (and optional host IP). */
  readonly publish?: { readonly containerPort: number; readonly hostPort: number; readonly hostIp?: string };
  readonly binds?: readonly string[];
  readonly restart?: "no" | "always" | "unless-stopped" | "on-failure";
  readonly memoryBytes?: number;
  readonly nanoCpus?: number;
  readonly user?: string;
  readonly stopTimeoutSeconds?: number;
}

export interface ContainerEngine {
  readonly address: string;
  /** Containers (running or not) carrying every one of these labels. */
  listContainers(labels: Readonly<Record<string, string>>): Promise<ContainerSummary[]>;
  /** Throws ConflictError when the name is taken: names are unique in an engine, which makes this a lock. */
  createContainer(spec: ContainerSpec): Promise<string>;
  startContainer(id: string): Promise<void>;
  /** Undefined when there is no such container. */
  inspectContainer(idOrName: string): Promise<ContainerState | undefined>;
  /** The last lines of the container's stdout and stderr. */
  logsTail(id: string, lines: number): Promise<string>;
  stopContainer(id: string, timeoutSeconds: number): Promise<void>;
  /** Force-removes; a container that is already gone is fine. */
  removeContainer(idOrName: string): Promise<void>;
  networkExists(name: string): Promise<boolean>;
  createNetwork(name: string): Promise<void>;
  connectNetwork(network: string, id: string, aliases: readonly string[]): Promise<void>;
  disconnectNetwork(network: string, id: string): Promise<void>;
}

/** The engine's log stream without a TTY is multiplexed: 8-byte frame headers (stream, 0, 0, 0, length). */
export function demultiplexLogs(buffer: Buffer): string {
  const parts: Buffer[] = [];
  let offset = 0;
  while (offset + 8 <= buffer.length && buffer[offset]! <= 2 && buffer.readUIntBE(offset + 1, 3) === 0) {
    const length = buffer.readUInt32BE(offset + 4);
    parts.push(buffer.subarray(offset + 8, offset + 8 + length));
    offset += 8 + length;
  }
  return offset === 0 ? buffer.toString("utf8") : Buffer.concat(parts).toString("utf8");
}

const nanoseconds = (ms: number): number => Math.round(ms * 1_000_000);

export class DockerodeContainers implements ContainerEngine {
  readonly address: string;
  private readonly docker: Docker;

  constructor(options: { timeoutMs?: number; env?: Readonly<Record<string, string | undefined>> } = {}) {
    this.address = dockerAddress(options.env);
    this.docker = new Docker(options.timeoutMs ? { timeout: options.timeoutMs } : undefined);
  }

  private failure(error: unknown, action: string): S3dockError {
    if (error instanceof S3dockError) return error;
    const code = (error as { code?: string }).code;
    if (code === "ECONNREFUSED" || code === "ENOENT" || code === "EACCES") {
      return new RemoteError(`cannot reach the Docker engine at ${this.address} (${code}): is dockerd running? (set DOCKER_HOST to use another engine)`, { cause: error });
    }
    const status = (error as { statusCode?: number }).statusCode;
    const reason = ((error as { json?: { message?: string } }).json?.message ?? (error as Error).message).trim();
    if (status === 404) return new NotFoundError(`${action}: ${reason}`, { cause: error });
    if (status === 409) return new ConflictError(`${action}: ${reason}`, { cause: error });
    return new RemoteError(`${action}: ${reason}`, { cause: error });
  }

  async listContainers(labels: Readonly<Record<string, string>>): Promise<ContainerSummary[]> {
    try {
      const found = await this.docker.listContainers({ all: true, filters: { label: Object.entries(labels).map(([k, v]) => `${k}=${v}`) } });
      return found.map((c) => ({
        id: c.Id,
        name: (c.Names[0] ?? "").replace(/^\//, ""),
        image: c.Image,
        imageId: c.ImageID,
        labels: c.Labels ?? {},
        running: c.State === "running",
        created: new Date(c.Created * 1000),
      }));
    } catch (error) {
      throw this.failure(error, "list containers");
    }
  }

  async createContainer(spec: ContainerSpec): Promise<string> {
    const port = spec.publish ? `${spec.publish.containerPort}/tcp` : undefined;
    try {
      const container = await this.docker.createContainer({
        name: spec.name,
        Image: spec.image,
        Labels: { ...spec.labels },
        ...(spec.env ? { Env: [...spec.env] } : {}),
        ...(spec.command ? { Cmd: [...spec.command] } : {}),
        ...(spec.user ? { User: spec.user } : {}),
        ...(spec.stopTimeoutSeconds !== undefined ? { StopTimeout: spec.stopTimeoutSeconds } : {}),
        ...(port ? { ExposedPorts: { [port]: {} } } : {}),
        ...(spec.healthCheck
          ? {
              Healthcheck: {
                Test: [...spec.healthCheck.test],
                Interval: nanoseconds(spec.healthCheck.intervalMs),
                Timeout: nanoseconds(spec.healthCheck.timeoutMs),
                Retries: spec.healthCheck.retries,
              },
            }
          : {}),
        HostConfig: {
          ...(spec.network ? { NetworkMode: spec.network.name } : {}),
          ...(spec.binds ? { Binds: [...spec.binds] } : {}),
          ...(spec.restart ? { RestartPolicy: { Name: spec.restart } } : {}),
          ...(spec.memoryBytes ? { Memory: spec.memoryBytes } : {}),
          ...(spec.nanoCpus ? { NanoCpus: spec.nanoCpus } : {}),
          ...(port && spec.publish
            ? { PortBindings: { [port]: [{ HostPort: String(spec.publish.hostPort), ...(spec.publish.hostIp ? { HostIp: spec.publish.hostIp } : {}) }] } }
            : {}),
        },
        ...(spec.network ? { NetworkingConfig: { EndpointsConfig: { [spec.network.name]: { Aliases: [...spec.network.aliases] } } } } : {}),
      });
      return container.id;
    } catch (error) {
      throw this.failure(error, `create container ${spec.name}`);
    }
  }

  async startContainer(id: string): Promise<void> {
    try {
      await this.docker.getContainer(id).start();
    } catch (error) {
      throw this.failure(error, `start container ${id.slice(0, 12)}`);
    }
  }

  async inspectContainer(idOrName: string): Promise<ContainerState | undefined> {
    try {
      const info = await this.docker.getContainer(idOrName).inspect();
      const health = info.State.Health as { Status: string; Log?: { Output?: string }[] } | undefined;
      const status = health?.Status;
      return {
        id: info.Id,
        running: info.State.Running,
        status: info.State.Status,
        exitCode: info.State.ExitCode,
        restartCount: info.RestartCount ?? 0,
        startedAt: info.State.StartedAt && !info.State.StartedAt.startsWith("0001") ? new Date(info.State.StartedAt) : undefined,
        health:
          status === "starting" || status === "healthy" || status === "unhealthy"
            ? { status, lastOutput: health?.Log?.at(-1)?.Output?.trim() }
            : undefined,
        networks: Object.fromEntries(
          Object.entries(info.NetworkSettings?.Networks ?? {}).map(([name, endpoint]) => [name, (endpoint as { Aliases?: string[] | null }).Aliases ?? []]),
        ),
      };
    } catch (error) {
      if ((error as { statusCode?: number }).statusCode === 404) return undefined;
      throw this.failure(error, `inspect container ${idOrName}`);
    }
  }

  async logsTail(id: string, lines: number): Promise<string> {
    try {
      const logs = (await this.docker.getContainer(id).logs({ stdout: true, stderr: true, tail: lines, follow: false })) as unknown as Buffer;
      return demultiplexLogs(Buffer.isBuffer(logs) ? logs : Buffer.from(String(logs))).trim();
    } catch (error) {
      throw this.failure(error, `read the logs of container ${id.slice(0, 12)}`);
    }
  }

  async stopContainer(id: string, timeoutSeconds: number): Promise<void> {
    try {
      await this.docker.getContainer(id).stop({ t: timeoutSeconds });
    } catch (error) {
      // 304: already stopped.
      if ((error as { statusCode?: number }).statusCode === 304) return;
      throw this.failure(error, `stop container ${id.slice(0, 12)}`);
    }
  }

  async removeContainer(idOrName: string): Promise<void> {
    try {
      await this.docker.getContainer(idOrName).remove({ force: true });
    } catch (error) {
      if ((error as { statusCode?: number }).statusCode === 404) return;
      throw this.failure(error, `remove container ${idOrName}`);
    }
  }

  async networkExists(name: string): Promise<boolean> {
    try {
      await this.docker.getNetwork(name).inspect();
      return true;
    } catch (error) {
      if ((error as { statusCode?: number }).statusCode === 404) return false;
      throw this.failure(error, `inspect network ${name}`);
    }
  }

  async createNetwork(name: string): Promise<void> {
    try {
      await this.docker.createNetwork({ Name: name, Driver: "bridge", CheckDuplicate: true });
    } catch (error) {
      // Another deploy created it a moment ago.
      if ((error as { statusCode?: number }).statusCode === 409) return;
      throw this.failure(error, `create network ${name}`);
    }
  }

  async connectNetwork(network: string, id: string, aliases: readonly string[]): Promise<void> {
    try {
      await this.docker.getNetwork(network).connect({ Container: id, EndpointConfig: { Aliases: [...aliases] } });
    } catch (error) {
      throw this.failure(error, `connect container ${id.slice(0, 12)} to network ${network}`);
    }
  }

  async disconnectNetwork(network: string, id: string): Promise<void> {
    try {
      await this.docker.getNetwork(network).disconnect({ Container: id, Force: true });
    } catch (error) {
      throw this.failure(error, `disconnect container ${id.slice(0, 12)} from network ${network}`);
    }
  }
}
