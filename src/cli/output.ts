/** Renders results and errors: text for people, one JSON envelope for scripts. Every line is scrubbed of secrets. */
import { isS3dockError } from "../errors.js";
import type { Redactor } from "./redact.js";

export interface Io {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
}

/** What a command hands back: the --json `data`, and the lines it prints on stdout otherwise. */
export interface Outcome {
  readonly data: object;
  readonly text: readonly string[];
}

export class Output {
  constructor(
    private readonly io: Io,
    private readonly redactor: Redactor,
  ) {}

  success(command: string, outcome: Outcome, json: boolean): void {
    if (json) {
      this.io.stdout(this.redactor.scrub(`${JSON.stringify({ success: true, command, data: outcome.data }, null, 2)}\n`));
    } else if (outcome.text.length > 0) {
      this.io.stdout(this.redactor.scrub(`${outcome.text.join("\n")}\n`));
    }
  }

  /** One line on stderr (with the stack at --log-level 3); with --json also the failure envelope on stdout. */
  failure(command: string, error: unknown, json: boolean, debug: boolean): number {
    const known = isS3dockError(error);
    const message = known ? error.message : `unexpected error: ${(error as Error)?.message ?? String(error)}`;
    const exitCode = known ? error.exitCode : 1;
    const detail = debug && error instanceof Error && error.stack ? `\n${error.stack}` : "";
    this.io.stderr(this.redactor.scrub(`s3dock: ${message}${detail}\n`));
    if (json) {
      const envelope = { success: false, command, error: message, error_type: known ? error.kind : "internal", exit_code: exitCode };
      this.io.stdout(this.redactor.scrub(`${JSON.stringify(envelope, null, 2)}\n`));
    }
    return exitCode;
  }
}

/** Bytes for people: 1.5 GiB, 349.2 MiB, 12 KiB. */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}
