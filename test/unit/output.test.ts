/** The CLI's one place for making text safe to print, and for keeping endpoint credentials out of it. */
import { describe, expect, it } from "vitest";
import { formatLogLine } from "../../src/cli/logger.js";
import { displayLine, escapeControl, MAX_ECHOED_CHARS, MAX_LINE_CHARS, Output } from "../../src/cli/output.js";
import { endpointCredentials, redactEndpoint, Redactor } from "../../src/cli/redact.js";
import { IntegrityError, OperationError } from "../../src/errors.js";

function output(secrets: string[] = []) {
  const redactor = new Redactor();
  for (const secret of secrets) redactor.add(secret);
  const printed = { stdout: "", stderr: "" };
  const out = new Output({ stdout: (text) => (printed.stdout += text), stderr: (text) => (printed.stderr += text) }, redactor);
  return { out, printed };
}

describe("escapeControl", () => {
  it("shows line breaks, ESC, C1 controls and bidirectional overrides as escapes, and leaves the rest", () => {
    expect(escapeControl("a\nb\r\tc\u001b[2J\u009b31m\u202eé✓")).toBe("a\\nb\\r\\tc\\u001b[2J\\u009b31m\\u202eé✓");
  });
});

describe("displayLine", () => {
  it("cuts an over-long value, saying how much is left out, and keeps the words around it", () => {
    const line = displayLine(`invalid name "${"x".repeat(10_000)}": use letters`);
    expect(line).toBe(`invalid name "${"x".repeat(MAX_ECHOED_CHARS - 1)}…(${10_003 - MAX_ECHOED_CHARS} more characters) use letters`);
  });

  it("cuts a line of many short values too", () => {
    const line = displayLine("word ".repeat(2000));
    expect(line.length).toBeLessThan(MAX_LINE_CHARS + 40);
    expect(line).toMatch(/…\(\d+ more characters\)$/);
  });
});

describe("Output", () => {
  it("prints one result per line whatever a value holds; --json keeps the value exact", () => {
    const { out, printed } = output();
    out.success("list envs", { data: { v: "x\ny" }, text: ["prod -> x\n[INFO] fake\u001b[2J"] }, false);
    expect(printed.stdout).toBe("prod -> x\\n[INFO] fake\\u001b[2J\n");
    out.success("list envs", { data: { v: "x\ny" }, text: [] }, true);
    expect(JSON.parse(printed.stdout.split("\n").slice(1).join("\n")).data.v).toBe("x\ny");
  });

  it("renders an error as one escaped, cut line, then its detail lines; --json carries the cut message", () => {
    const { out, printed } = output();
    const error = new OperationError(`the new container ${"n".repeat(1000)} failed\n[INFO] forged`, { details: ["last log lines:\nok\n\u001b[31mred"] });
    expect(out.failure("deploy", error, true, false)).toBe(1);
    const lines = printed.stderr.trimEnd().split("\n");
    expect(lines).toEqual([expect.stringMatching(/^s3dock: the new container n{256}…\(744 more characters\) failed\\n\[INFO\] forged$/), "last log lines:", "ok", "\\u001b[31mred"]);
    const envelope = JSON.parse(printed.stdout) as { error: string };
    expect(envelope.error.split("\n")[0]).toMatch(/^the new container n{256}…/);
  });

  it("removes a secret before cutting, so no piece of one is left", () => {
    const secret = "S3CRET-0123456789abcdef";
    const { out, printed } = output([secret]);
    out.failure("pull", new IntegrityError(`${"k".repeat(240)}${secret}${"k".repeat(500)}`), true, false);
    expect(printed.stderr + printed.stdout).not.toContain("S3CRET");
  });
});

describe("log lines", () => {
  it("are one line, escaped and cut, like messages", () => {
    const line = formatLogLine(JSON.stringify({ level: 40, time: 0, msg: `skipped: ${"v".repeat(5000)} \n[ERROR] forged\u001b[2J` }));
    expect(line.trimEnd().split("\n")).toHaveLength(1);
    expect(line).toContain("…(");
    expect(line).toContain("\\n[ERROR] forged\\u001b[2J");
  });
});

describe("endpoint credentials", () => {
  it("finds the userinfo and the password, as written and decoded", () => {
    expect(endpointCredentials("http://user:p%40ss@127.0.0.1:7480")).toEqual(["user:p%40ss", "p%40ss", "user:p@ss", "p@ss"]);
    expect(endpointCredentials("https://token@s3.example.com/")).toEqual(["token"]);
    expect(endpointCredentials("http://127.0.0.1:7480")).toEqual([]);
    expect(endpointCredentials(undefined)).toEqual([]);
  });

  it("shows an endpoint with *** for its userinfo, up to the authority's last @", () => {
    expect(redactEndpoint("http://user:p@ss@host:1/path?x=@")).toBe("http://***@host:1/path?x=@");
    expect(redactEndpoint("http://host:1")).toBe("http://host:1");
  });
});
