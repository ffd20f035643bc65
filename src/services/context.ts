/** What every service is handed: the clients, the clock, who is acting, and how to report progress. */
import type { Logger } from "pino";
import type { DockerEngine } from "../clients/docker.js";
import type { ObjectStore } from "../clients/object-store.js";
import type { StorageFormat, TransferSettings } from "../domain/config.js";

export interface Clock {
  now(): Date;
}

export interface ProgressBar {
  update(value: number): void;
  stop(): void;
}

/** Shows progress on a terminal; a silent implementation serves pipes, --json and tests. */
export interface ProgressReporter {
  start(label: string, total: number | undefined, unit: "bytes"): ProgressBar;
}

export const silentProgress: ProgressReporter = {
  start: () => ({ update: () => undefined, stop: () => undefined }),
};

export interface ServiceContext {
  readonly store: ObjectStore;
  readonly docker: DockerEngine;
  readonly logger: Logger;
  readonly clock: Clock;
  /** The OS user name, or "unknown": recorded as promoted_by / user. */
  readonly user: string;
  readonly transfer: TransferSettings;
  /** How push stores an image unless told otherwise. */
  readonly storageFormat: StorageFormat;
  readonly retryCount: number;
  readonly progress: ProgressReporter;
  /** `s3dock/<version>`, recorded in the documents this tool writes. */
  readonly toolVersion: string;
  /** A short random string that makes audit keys unique. */
  readonly uniqueId: () => string;
}
