/**
 * Renders results and errors: text for people, one JSON envelope for scripts. Every line is scrubbed
 * of secrets, and text is made safe for a terminal here, once: values from the bucket, the engine or
 * the command line may hold control characters or run to any length.
 */
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

/** C0 and C1 controls and DEL (cursor moves, screen clears, fake line breaks) and bidirectional overrides (reordered text). */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
const NAMED_ESCAPES: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };

/** Shows control characters as escapes (`\n`, `\u001b`), so a value can neither end the line nor drive the terminal. */
export function escapeControl(text: string): string {
  return text.replace(CONTROL, (char) => NAMED_ESCAPES[char] ?? `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** A value echoed in a message is cut past this many characters (a key or name is far shorter). */
export const MAX_ECHOED_CHARS = 256;
/** A message line is cut past this many characters. */
export const MAX_LINE_CHARS = 2000;

const cut = (text: string, max: number): string => (text.length <= max ? text : `${text.slice(0, max)}…(${text.length - max} more characters)`);

const LONG_VALUE = new RegExp(`\\S{${MAX_ECHOED_CHARS + 1},}`, "g");

/** A message with every over-long value (a run without spaces) and the whole cut short. */
export function cutLongValues(text: string): string {
  return cut(text.replace(LONG_VALUE, (value) => cut(value, MAX_ECHOED_CHARS)), MAX_LINE_CHARS);
}

/** One line of a message or log, safe to print: controls escaped, long values and the line itself cut. */
export function displayLine(text: string): string {
  return cutLongValues(escapeControl(text));
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
      // Results are printed whole (scripts read them), but one value is one line.
      this.io.stdout(this.redactor.scrub(`${outcome.text.map(escapeControl).join("\n")}\n`));
    }
  }

  /**
   * One line on stderr (then the error's detail lines, and the stack at --log-level 3); with --json
   * also the failure envelope on stdout, where JSON escapes the controls and values are only cut.
   * Secrets go before anything is cut, so no part of one is left behind.
   */
  failure(command: string, error: unknown, json: boolean, debug: boolean): number {
    const known = isS3dockError(error);
    const scrub = (text: string) => this.redactor.scrub(text);
    const message = scrub(known ? error.message : `unexpected error: ${(error as Error)?.message ?? String(error)}`);
    const details = (known ? error.details : []).flatMap((detail) => scrub(detail).split("\n"));
    // The frames only: the stack's first lines repeat the message, which is shown escaped above.
    const stack = debug && error instanceof Error && error.stack ? scrub(error.stack).split("\n").filter((line) => /^\s+at /.test(line)) : [];
    const exitCode = known ? error.exitCode : 1;
    this.io.stderr(scrub(`${[`s3dock: ${message}`, ...details, ...stack].map(displayLine).join("\n")}\n`));
    if (json) {
      const envelope = { success: false, command, error: [message, ...details].map(cutLongValues).join("\n"), error_type: known ? error.kind : "internal", exit_code: exitCode };
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
