/**
 * The Linux executables, run: linux-x64 natively, linux-arm64 under qemu-user (Debian's
 * qemu-user-static, with the arm64 C/C++ runtime libraries of libc6-arm64-cross and
 * libstdc++6-arm64-cross: `make dist-deps`). Each must start without any Node, answer --help,
 * version --full and config show, and push and pull an image through the real engine and S3.
 */
import { existsSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { cliEnv, s3Settings } from "../integration/harness.js";
import { type Cli, bundleVersion, pushPullRoundTrip, releaseFile, runProgram } from "./helpers.js";

const QEMU = "/usr/bin/qemu-aarch64-static";
const ARM64_SYSROOT = "/usr/aarch64-linux-gnu";

/** The environment with nothing on PATH, so no node: the executable must bring its own. */
const withoutNode = (env: Record<string, string>) => ({ ...env, PATH: "/nonexistent" });

const native: Cli = (args, env) => runProgram(releaseFile("s3dock-linux-x64"), args, { env: withoutNode(env) });
const emulated: Cli = (args, env) => {
  for (const needed of [QEMU, `${ARM64_SYSROOT}/lib/ld-linux-aarch64.so.1`, `${ARM64_SYSROOT}/lib/libstdc++.so.6`]) {
    if (!existsSync(needed)) throw new Error(`${needed} is missing: run make dist-deps`);
  }
  return runProgram(QEMU, ["-L", ARM64_SYSROOT, releaseFile("s3dock-linux-arm64"), ...args], { env: withoutNode(env) });
};

describe.each([
  ["linux-x64", native],
  ["linux-arm64 under qemu", emulated],
])("%s", (label, cli) => {
  const env = cliEnv("s3dock-dist-config");

  it("prints its help, with no node on PATH", async () => {
    const result = await cli(["--help"], env);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^Usage: s3dock /);
    expect(result.stdout).toMatch(/^ {2}push (\[options\] )?<image> /m);
  });

  it("reports the version, commit and build date of the bundle it was made from", async () => {
    const result = await cli(["version", "--full"], env);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toBe(bundleVersion());
  });

  it("shows the resolved configuration, without the secret key", async () => {
    const result = await cli(["config", "show"], env);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^Bucket:\s+s3dock-dist-config$/m);
    expect(result.stdout).toMatch(new RegExp(`^Endpoint:\\s+${s3Settings.endpoint.replace(/[.]/g, "\\.")}$`, "m"));
    expect(result.stdout + result.stderr).not.toContain(s3Settings.secretKey);
  });

  it("pushes an image to the bucket and pulls it back into the engine", async () => {
    await pushPullRoundTrip(cli, label.replace(/ .*/, ""));
  });
});
