/**
 * The one error hierarchy. Services throw these with enough context to act on; the CLI renders
 * them once, at the top, and exits with `exitCode`.
 */
export abstract class S3dockError extends Error {
  abstract readonly exitCode: number;
  /** A short, stable name for scripts (the --json envelope carries it as `error_type`). */
  abstract readonly kind: string;
  /** Lines shown under the one-line message (a container's log tail): the message itself never spans lines. */
  readonly details: readonly string[];

  constructor(message: string, options?: { cause?: unknown; details?: readonly string[] }) {
    super(message, options);
    this.name = new.target.name;
    this.details = options?.details ?? [];
  }
}

/** Bad arguments or flags: nothing was attempted. */
export class UsageError extends S3dockError {
  readonly exitCode = 2;
  readonly kind = "usage";
}

/** The configuration file or environment cannot be used as it is. */
export class ConfigError extends S3dockError {
  readonly exitCode = 2;
  readonly kind = "config";
}

/** An image, tag, pointer or file that the command needs does not exist. */
export class NotFoundError extends S3dockError {
  readonly exitCode = 1;
  readonly kind = "not_found";
}

/** Someone else changed the thing first, or the change would overwrite something immutable. */
export class ConflictError extends S3dockError {
  readonly exitCode = 1;
  readonly kind = "conflict";
}

/** Bytes or documents that do not match what was recorded, or that do not parse. */
export class IntegrityError extends S3dockError {
  readonly exitCode = 1;
  readonly kind = "integrity";
}

/** The S3 server, the Docker engine or git failed or could not be reached. */
export class RemoteError extends S3dockError {
  readonly exitCode = 1;
  readonly kind = "remote";
}

/** The workflow refused to go on (dirty tree, failed health check, ...). */
export class OperationError extends S3dockError {
  readonly exitCode = 1;
  readonly kind = "failed";
}

export function isS3dockError(error: unknown): error is S3dockError {
  return error instanceof S3dockError;
}
