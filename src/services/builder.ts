/** build: a clean git tree in, an image tagged `app:YYYYMMDD-HHMM-<hash7>` from its commit out. */
import { isAbsolute, resolve } from "node:path";
import { access } from "node:fs/promises";
import { OperationError, UsageError } from "../errors.js";
import { formatImageRef, parseAppName } from "../domain/names.js";
import { formatGitTime } from "../domain/time.js";
import type { GitRepo } from "../clients/git.js";
import { packBuildContext } from "../transfer/build-context.js";
import type { ServiceContext } from "./context.js";

export interface BuildRequest {
  readonly app: string;
  /** The directory with the Dockerfile (default: the current directory). */
  readonly path: string;
  readonly dockerfile: string;
  /** The build context (default: `path`). */
  readonly context: string | undefined;
  readonly platform: string | undefined;
  readonly onOutput: (line: string) => void;
}

export interface BuildResult {
  readonly image_tag: string;
  readonly app_name: string;
  readonly git_hash: string;
  readonly git_time: string;
  readonly image_id: string;
  readonly duration_ms: number;
}

const DIRTY_FILES_SHOWN = 10;

export class Builder {
  constructor(
    private readonly ctx: Pick<ServiceContext, "docker" | "logger">,
    private readonly openRepo: (directory: string) => Promise<GitRepo>,
  ) {}

  async build(request: BuildRequest): Promise<BuildResult> {
    const started = Date.now();
    const app = parseAppName(request.app);
    const path = resolve(request.path);
    const contextDir = resolve(request.context ?? path);
    const dockerfilePath = isAbsolute(request.dockerfile) ? request.dockerfile : resolve(path, request.dockerfile);
    await access(dockerfilePath).catch(() => {
      throw new UsageError(`no Dockerfile at ${dockerfilePath} (use --path or --dockerfile)`);
    });
    await access(contextDir).catch(() => {
      throw new UsageError(`build context ${contextDir} does not exist`);
    });

    const repo = await this.openRepo(path);
    const changed = await repo.changedTrackedFiles();
    if (changed.length > 0) {
      const shown = changed.slice(0, DIRTY_FILES_SHOWN).join(", ");
      const more = changed.length > DIRTY_FILES_SHOWN ? ` and ${changed.length - DIRTY_FILES_SHOWN} more` : "";
      throw new OperationError(
        `refusing to build from a dirty tree: ${changed.length} tracked file(s) modified or staged in ${repo.root} (${shown}${more}); commit or stash them first`,
      );
    }
    const commit = await repo.headCommit();
    const gitHash = commit.hash.slice(0, 7);
    const gitTime = formatGitTime(commit.committerTime);
    const tag = formatImageRef({ app, gitTime, gitHash });
    this.ctx.logger.info(`building ${tag} from ${contextDir}`);

    const context = await packBuildContext(contextDir, dockerfilePath);
    await this.ctx.docker.buildImage(context.stream, {
      tag,
      dockerfile: context.dockerfile,
      platform: request.platform,
      labels: {
        "s3dock.app": app,
        "s3dock.git-hash": commit.hash,
        "s3dock.git-time": gitTime,
        "org.opencontainers.image.revision": commit.hash,
        "org.opencontainers.image.created": commit.committerTime.toISOString(),
      },
      onOutput: request.onOutput,
    });
    const image = await this.ctx.docker.inspectImage(tag);
    if (!image) throw new OperationError(`the build reported success but ${tag} is not in the engine`);
    return { image_tag: tag, app_name: app, git_hash: gitHash, git_time: gitTime, image_id: image.id, duration_ms: Date.now() - started };
  }
}
