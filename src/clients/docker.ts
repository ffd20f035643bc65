/** The Docker engine as the services see it, and its implementation over dockerode. */
import { Readable, type Writable } from "node:stream";
import Docker from "dockerode";
import { IntegrityError, NotFoundError, RemoteError, S3dockError } from "../errors.js";
import type { ImageIdentity } from "../domain/image-identity.js";
import { chainIds } from "../domain/oci.js";
import { writeChunks, type PooledChunk } from "../transfer/buffer-pool.js";

export interface ImageInfo {
  /**
   * `sha256:…`, the engine's name for the image: the config digest on graphdriver stores, the
   * manifest digest on the containerd image store. Compare images across engines by `identity`.
   */
  readonly id: string;
  readonly identity: ImageIdentity;
  readonly repoTags: readonly string[];
  readonly labels: Readonly<Record<string, string>>;
  readonly size: number;
  readonly hasHealthcheck: boolean;
}

export interface BuildOptions {
  readonly tag: string;
  readonly dockerfile: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly platform: string | undefined;
  /** Each line of the daemon's build output, as it arrives. */
  readonly onOutput: (line: string) => void;
}

export interface DockerEngine {
  /** Where the engine is, for messages: the socket path or DOCKER_HOST. */
  readonly address: string;
  inspectImage(reference: string): Promise<ImageInfo | undefined>;
  /** `docker save`: the image as a tar stream. */
  saveImage(reference: string): Promise<Readable>;
  /**
   * `docker load` of a tar given as pooled chunks, each released once the engine's connection has
   * taken it, with up to `queued` of them (default 1) on the connection at once: resolves with the
   * loaded image names; rejects when the engine reports an error, or with the archive's own error
   * when the chunks fail.
   */
  loadImage(archive: AsyncIterable<PooledChunk>, options?: { queued?: number }): Promise<string[]>;
  buildImage(context: Readable, options: BuildOptions): Promise<void>;
  /** Images whose repository is `repository`, as `repository:tag` with their IDs. */
  listImageTags(repository: string): Promise<{ tag: string; id: string; created: Date }[]>;
  /** Removes a name (the image too when it was its last), or an image by ID. */
  removeImage(reference: string): Promise<void>;
  /** Points `reference` (`app:tag`) at the image with this ID. */
  tagImage(id: string, reference: string): Promise<void>;
  /** The IDs of every image in the engine, named or not. */
  imageIds(): Promise<Set<string>>;
  /** The image IDs that any container (running or not) was created from. */
  imageIdsInUse(): Promise<Set<string>>;
  /** Which image store the engine keeps: "containerd" (the containerd image store) or "graphdriver". */
  imageStore(): Promise<ImageStore>;
  /** What the engine's images hold: the chain IDs of their layer stacks, and (containerd store) their manifest digests. */
  localLayers(): Promise<LocalLayers>;
}

export type ImageStore = "graphdriver" | "containerd";

export interface LocalLayers {
  readonly chainIds: ReadonlySet<string>;
  readonly manifestDigests: ReadonlySet<string>;
}

interface JsonMessage {
  stream?: string;
  status?: string;
  error?: string;
  errorDetail?: { message?: string };
  aux?: { ID?: string };
}

export function dockerAddress(env: Readonly<Record<string, string | undefined>> = process.env): string {
  return env.DOCKER_HOST ?? "unix:///var/run/docker.sock";
}

/** Reads the engine's newline-delimited JSON progress stream, failing on the first embedded error. */
export async function readJsonMessages(stream: Readable, onMessage: (message: JsonMessage) => void): Promise<void> {
  let pending = "";
  const handle = (line: string) => {
    if (line.trim() === "") return;
    let message: JsonMessage;
    try {
      message = JSON.parse(line) as JsonMessage;
    } catch {
      message = { stream: line };
    }
    if (message.error || message.errorDetail?.message) {
      throw new RemoteError(`the Docker engine reported: ${(message.errorDetail?.message ?? message.error)!.trim()}`);
    }
    onMessage(message);
  };
  for await (const chunk of stream) {
    pending += chunk.toString("utf8");
    const lines = pending.split("\n");
    pending = lines.pop()!;
    for (const line of lines) handle(line);
  }
  handle(pending);
}

export class DockerodeEngine implements DockerEngine {
  readonly address: string;
  protected readonly docker: Docker;

  constructor(options: { timeoutMs?: number; env?: Readonly<Record<string, string | undefined>> } = {}) {
    this.address = dockerAddress(options.env);
    this.docker = new Docker(options.timeoutMs ? { timeout: options.timeoutMs } : undefined);
  }

  /** One message for "no engine there", the most common failure on a fresh host. */
  protected failure(error: unknown, action: string): S3dockError {
    if (error instanceof S3dockError) return error;
    const code = (error as { code?: string }).code;
    if (code === "ECONNREFUSED" || code === "ENOENT" || code === "EACCES" || code === "ETIMEDOUT" || code === "EHOSTUNREACH") {
      return new RemoteError(
        `cannot reach the Docker engine at ${this.address} (${code}): is dockerd running, and may this user use it? (set DOCKER_HOST to use another engine)`,
        { cause: error },
      );
    }
    const status = (error as { statusCode?: number }).statusCode;
    const reason = (error as { json?: { message?: string } }).json?.message ?? (error as Error).message;
    if (status === 404) return new NotFoundError(`${action}: ${reason}`, { cause: error });
    return new RemoteError(`${action}: ${reason}`, { cause: error });
  }

  /** A full disk on the engine's side is the host's to fix, not a fault of the image: say so. */
  private diskFull(error: unknown): RemoteError | undefined {
    const reason = (error as { json?: { message?: string } }).json?.message ?? (error as Error).message;
    if (!/no space left on device/i.test(reason)) return undefined;
    return new RemoteError(
      `the Docker engine at ${this.address} ran out of disk space while loading the image: free space in its data root (docker system df; docker image prune) and pull again (${reason.replace(/^the Docker engine reported: /, "")})`,
      { cause: error },
    );
  }

  async inspectImage(reference: string): Promise<ImageInfo | undefined> {
    try {
      const info = await this.docker.getImage(reference).inspect();
      return {
        id: info.Id,
        identity: {
          // Only the containerd image store describes the image by a manifest (Descriptor); the others' ID is the config digest.
          configDigest: info.Descriptor ? undefined : info.Id,
          diffIds: info.RootFS?.Layers ?? [],
          created: info.Created,
        },
        repoTags: info.RepoTags ?? [],
        labels: info.Config?.Labels ?? {},
        size: info.Size,
        hasHealthcheck: Boolean(info.Config?.Healthcheck?.Test?.length && info.Config.Healthcheck.Test[0] !== "NONE"),
      };
    } catch (error) {
      if ((error as { statusCode?: number }).statusCode === 404) return undefined;
      throw this.failure(error, `inspect image ${reference}`);
    }
  }

  async saveImage(reference: string): Promise<Readable> {
    try {
      return (await this.docker.getImage(reference).get()) as unknown as Readable;
    } catch (error) {
      throw this.failure(error, `export image ${reference}`);
    }
  }

  async loadImage(archive: AsyncIterable<PooledChunk>, options: { queued?: number } = {}): Promise<string[]> {
    const body = new PooledRequestBody(archive, options.queued ?? 1);
    try {
      const response = (await this.docker.loadImage(body, { quiet: true })) as unknown as Readable;
      const loaded: string[] = [];
      const unpackFailures: string[] = [];
      await readJsonMessages(response, (message) => {
        const text = message.stream ?? "";
        const match = /Loaded image(?: ID)?: (\S+)/.exec(text);
        if (match) loaded.push(match[1]!);
        // The containerd image store reports a failed unpack inside a successful load, and keeps a broken image record.
        if (text.startsWith("Error unpacking image")) unpackFailures.push(text.trim());
      });
      if (unpackFailures.length > 0) {
        await Promise.all(loaded.map((name) => this.docker.getImage(name).remove().catch(() => undefined)));
        throw new RemoteError(`the Docker engine could not unpack the loaded image, which was removed again: ${unpackFailures[0]!.replace(/^Error unpacking image \S+: /, "")}`);
      }
      if (loaded.length === 0) throw new IntegrityError("the Docker engine loaded no image from the archive");
      return loaded;
    } catch (error) {
      // A failing archive cuts the request short: its own error is the cause, the engine's complaint the symptom.
      if (body.failure) throw body.failure;
      body.stop();
      // The engine reports a full disk as a failed request or as an error inside the response stream.
      throw this.diskFull(error) ?? this.failure(error, "load image");
    }
  }

  async buildImage(context: Readable, options: BuildOptions): Promise<void> {
    let response: Readable;
    try {
      response = (await this.docker.buildImage(context, {
        t: options.tag,
        dockerfile: options.dockerfile,
        labels: { ...options.labels },
        platform: options.platform,
        rm: true,
        forcerm: true,
      })) as unknown as Readable;
    } catch (error) {
      throw this.failure(error, `build ${options.tag}`);
    }
    try {
      await readJsonMessages(response, (message) => {
        const text = message.stream ?? message.status;
        if (text) for (const line of text.split("\n")) if (line.trim() !== "") options.onOutput(line);
      });
    } catch (error) {
      throw new RemoteError(`build of ${options.tag} failed: ${(error as Error).message.replace(/^the Docker engine reported: /, "")}`);
    }
  }

  async listImageTags(repository: string): Promise<{ tag: string; id: string; created: Date }[]> {
    try {
      const images = await this.docker.listImages({ filters: { reference: [repository] } });
      return images.flatMap((image) =>
        (image.RepoTags ?? [])
          .filter((tag) => tag.startsWith(`${repository}:`))
          .map((tag) => ({ tag, id: image.Id, created: new Date(image.Created * 1000) })),
      );
    } catch (error) {
      throw this.failure(error, `list images of ${repository}`);
    }
  }

  async removeImage(reference: string): Promise<void> {
    try {
      await this.docker.getImage(reference).remove({ noprune: false });
    } catch (error) {
      throw this.failure(error, `remove image ${reference}`);
    }
  }

  async imageStore(): Promise<ImageStore> {
    try {
      const info = (await this.docker.info()) as { DriverStatus?: [string, string][] };
      return (info.DriverStatus ?? []).some(([key, value]) => key === "driver-type" && value.startsWith("io.containerd.snapshotter")) ? "containerd" : "graphdriver";
    } catch (error) {
      throw this.failure(error, "read the engine's info");
    }
  }

  async localLayers(): Promise<LocalLayers> {
    const chains = new Set<string>();
    const manifests = new Set<string>();
    try {
      const images = await this.docker.listImages();
      for (const summary of images) {
        const info = await this.docker
          .getImage(summary.Id)
          .inspect()
          .catch(() => undefined); // removed meanwhile
        for (const chain of chainIds(info?.RootFS?.Layers ?? [])) chains.add(chain);
        if (info?.Descriptor?.digest) manifests.add(info.Descriptor.digest);
      }
    } catch (error) {
      throw this.failure(error, "list the engine's images");
    }
    return { chainIds: chains, manifestDigests: manifests };
  }

  async tagImage(id: string, reference: string): Promise<void> {
    const colon = reference.lastIndexOf(":");
    try {
      await this.docker.getImage(id).tag({ repo: reference.slice(0, colon), tag: reference.slice(colon + 1) });
    } catch (error) {
      throw this.failure(error, `tag image ${id} as ${reference}`);
    }
  }

  async imageIds(): Promise<Set<string>> {
    try {
      return new Set((await this.docker.listImages({ all: true })).map((image) => image.Id));
    } catch (error) {
      throw this.failure(error, "list images");
    }
  }

  async imageIdsInUse(): Promise<Set<string>> {
    try {
      const containers = await this.docker.listContainers({ all: true });
      return new Set(containers.map((container) => container.ImageID));
    } catch (error) {
      throw this.failure(error, "list containers");
    }
  }
}

/**
 * A request body for docker-modem, which pipes whatever body it is given into the request. Piping
 * lets go of a chunk as soon as it is queued; writing with callbacks instead gives each pooled
 * buffer back only once the socket has taken its bytes, so the pool can reuse it.
 */
class PooledRequestBody extends Readable {
  /** Set when the archive itself failed, as opposed to the request. */
  failure: unknown;
  private destination: Writable | undefined;

  constructor(
    private readonly archive: AsyncIterable<PooledChunk>,
    private readonly queued: number,
  ) {
    super();
  }

  override _read(): void {
    // Never read: pipe() below writes the chunks itself.
  }

  override pipe<T extends NodeJS.WritableStream>(destination: T): T {
    this.destination = destination as unknown as Writable;
    writeChunks(this.chunksNotingFailure(), this.destination, { queued: this.queued }).catch(() => undefined); // the request reports it
    return destination;
  }

  /** Stops writing (the engine has failed the load): the archive's chunks are given back and its source closed. */
  stop(): void {
    this.destination?.destroy();
  }

  private async *chunksNotingFailure(): AsyncGenerator<PooledChunk> {
    try {
      yield* this.archive;
    } catch (error) {
      this.failure = error;
      throw error;
    }
  }
}
