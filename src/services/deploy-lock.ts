/**
 * One deploy per app and environment at a time, across every machine that uses the engine: the lock
 * is a container named `{app}.{env}.s3dock-lock`, created (never started). Container names are
 * unique in an engine, so creating it is atomic; removing it releases the lock.
 */
import { hostname } from "node:os";
import type { ContainerEngine } from "../clients/containers.js";
import { deploymentName } from "../domain/deploy-config.js";
import { ConflictError } from "../errors.js";
import type { Clock } from "./context.js";

export const LOCK_LABEL = "s3dock.lock";
const LOCKED_AT_LABEL = "s3dock.locked-at";
const HOLDER_LABEL = "s3dock.holder";
/** A lock older than this was left by a deploy that died: it is broken. */
export const STALE_LOCK_MS = 15 * 60 * 1000;
const POLL_MS = 500;

/** Unlike any container's (those end in `.blue` or `.green`), and one per app and env (see deploymentName). */
export const lockName = (app: string, env: string): string => `${deploymentName(app, env)}.s3dock-lock`;

export interface HeldLock {
  release(): Promise<void>;
}

export class DeployLock {
  constructor(
    private readonly engine: ContainerEngine,
    private readonly clock: Clock,
    private readonly log: (message: string) => void,
    private readonly sleep: (ms: number) => Promise<void> = (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  ) {}

  /**
   * Takes the lock, waiting up to `waitMs` for the holder to finish (0: refuse at once).
   * `image` is any image the engine has: a container needs one even when it never runs.
   */
  async acquire(app: string, env: string, image: string, user: string, waitMs: number): Promise<HeldLock> {
    const name = lockName(app, env);
    const holder = `${user}@${hostname()} pid ${process.pid}`;
    const deadline = this.clock.now().getTime() + waitMs;
    for (;;) {
      try {
        const id = await this.engine.createContainer({
          name,
          image,
          command: ["s3dock-deploy-lock"],
          labels: { [LOCK_LABEL]: `${app}/${env}`, [LOCKED_AT_LABEL]: this.clock.now().toISOString(), [HOLDER_LABEL]: holder },
        });
        return { release: () => this.engine.removeContainer(id) };
      } catch (error) {
        if (!(error instanceof ConflictError)) throw error;
      }
      const current = (await this.engine.listContainers({ [LOCK_LABEL]: `${app}/${env}` })).find((c) => c.name === name);
      if (!current) continue; // released between our attempt and the look
      const lockedAt = Date.parse(current.labels[LOCKED_AT_LABEL] ?? "") || current.created.getTime();
      const age = this.clock.now().getTime() - lockedAt;
      if (age > STALE_LOCK_MS) {
        this.log(`breaking the stale deploy lock ${name} of ${current.labels[HOLDER_LABEL] ?? "unknown"} (taken ${Math.round(age / 60000)} minutes ago)`);
        await this.engine.removeContainer(current.id);
        continue;
      }
      if (this.clock.now().getTime() >= deadline) {
        throw new ConflictError(
          `another deploy of ${app} ${env} is running (lock ${name} held by ${current.labels[HOLDER_LABEL] ?? "unknown"} since ${new Date(lockedAt).toISOString()}); ` +
            `try again later, pass --wait-lock <seconds>, or remove a lock left by a crash: docker rm ${name}`,
        );
      }
      await this.sleep(POLL_MS);
    }
  }
}
