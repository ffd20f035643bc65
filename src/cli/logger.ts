/**
 * Logs on stderr as `[LEVEL] 2006-01-02 15:04:05 message key=value`, the Go tool's shape. Every
 * line passes through the redactor, so a secret can never reach the terminal or a log file, and is
 * made one safe line (control characters escaped, long values cut) like every message.
 */
import pino, { type Logger } from "pino";
import { displayLine } from "./output.js";
import type { Redactor } from "./redact.js";

const LEVELS: Record<1 | 2 | 3, pino.Level> = { 1: "error", 2: "info", 3: "debug" };
const LABELS: Record<number, string> = { 10: "TRACE", 20: "DEBUG", 30: "INFO", 40: "WARN", 50: "ERROR", 60: "FATAL" };
const OMITTED = new Set(["level", "time", "msg", "pid", "hostname", "err"]);

const pad = (value: number): string => String(value).padStart(2, "0");

function formatTime(epochMs: number): string {
  const d = new Date(epochMs);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** `scrub` removes secrets before the line is cut, so no part of one is left behind. */
export function formatLogLine(line: string, scrub: (text: string) => string = (text) => text): string {
  const entry = JSON.parse(line) as Record<string, unknown>;
  const fields = Object.entries(entry)
    .filter(([key]) => !OMITTED.has(key))
    .map(([key, value]) => `${key}=${typeof value === "string" ? value : JSON.stringify(value)}`);
  const text = [entry.msg, ...fields].filter((part) => part !== undefined && part !== "").join(" ");
  return `[${LABELS[entry.level as number] ?? "INFO"}] ${formatTime(entry.time as number)} ${displayLine(scrub(text))}\n`;
}

export function createLogger(level: 1 | 2 | 3, redactor: Redactor, write: (text: string) => void = (text) => process.stderr.write(text)): Logger {
  return pino(
    {
      level: LEVELS[level],
      base: undefined,
      redact: { paths: ["secret_key", "secretAccessKey", "credentials", "*.secret_key", "*.secretAccessKey", "authorization"], censor: "***" },
    },
    { write: (line: string) => write(redactor.scrub(formatLogLine(line, (text) => redactor.scrub(text)))) },
  );
}
