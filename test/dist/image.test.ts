/**
 * The container image make image builds: FROM scratch with nothing but the executable and what it
 * loads, tagged with the package version, and able to push and pull through the engine socket it
 * is given, as an Alpine or docker:cli CI job would run it.
 */
import { execFileSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { join } from "node:path";
import { ROOT, docker } from "../integration/harness.js";
import { type Cli, VERSION, bundleVersion, pushPullRoundTrip, runProgram } from "./helpers.js";

const IMAGE = `s3dock:${VERSION}`;
/** What the engine adds to every container's file system, whatever the image. */
const ENGINE_MADE = /^(\.dockerenv|dev\/.*|proc\/.*|sys\/.*|etc\/(hostname|hosts|mtab|resolv\.conf))$/;

/** How the container reaches the engine the tests use: its socket mounted, or DOCKER_HOST passed on. */
function engineArgs(): string[] {
  const host = process.env.DOCKER_HOST ?? "unix:///var/run/docker.sock";
  if (host.startsWith("unix://")) return ["-v", `${host.slice("unix://".length)}:/var/run/docker.sock`];
  return ["-e", `DOCKER_HOST=${host}`];
}

/** `docker run --rm` of the image with the CLI's environment (S3 settings, bucket), on the host network for the local S3. */
const inContainer: Cli = (args, env) => {
  const passed = Object.entries(env)
    .filter(([name]) => /^(AWS_|S3DOCK_)/.test(name))
    .flatMap(([name, value]) => ["-e", `${name}=${value}`]);
  return runProgram("docker", ["run", "--rm", "--network", "host", ...engineArgs(), ...passed, IMAGE, ...args], { env: { PATH: process.env.PATH ?? "", ...(process.env.DOCKER_HOST ? { DOCKER_HOST: process.env.DOCKER_HOST } : {}) } });
};

describe(`the image ${IMAGE}`, () => {
  it("is tagged with the package version, not latest, and runs s3dock", async () => {
    expect(docker(["image", "inspect", "--format", "{{json .Config.Entrypoint}}", IMAGE])).toBe('["/usr/local/bin/s3dock"]');
    expect(JSON.parse(docker(["image", "inspect", "--format", "{{json .RepoTags}}", IMAGE]))).not.toContain("s3dock:latest");
    const result = await inContainer(["version", "--full"], {});
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toBe(bundleVersion());
  });

  it("is built FROM scratch and holds only the executable, its libraries, CA certificates and user/host files", () => {
    const container = docker(["create", IMAGE]);
    try {
      const files = execFileSync("sh", ["-c", `docker export ${container} | tar -t`], { encoding: "utf8", maxBuffer: 16 << 20 })
        .split("\n")
        .filter((entry) => entry && !entry.endsWith("/") && !ENGINE_MADE.test(entry))
        .sort();
      // The shared libraries at the paths ldd gives for the executable on this machine.
      const libraries = execFileSync("ldd", [join(ROOT, "dist/s3dock")], { encoding: "utf8" })
        .split("\n")
        .map((line) => /(?:=> )?(\/\S+) \(0x/.exec(line)?.[1]?.slice(1))
        .filter((path): path is string => path !== undefined);
      expect(libraries).toContain("lib/x86_64-linux-gnu/libc.so.6");
      expect(files).toEqual(
        [
          "etc/group",
          "etc/nsswitch.conf",
          "etc/passwd",
          "etc/ssl/certs/ca-certificates.crt",
          "usr/local/bin/s3dock",
          ...libraries,
        ].sort(),
      );
    } finally {
      docker(["rm", container]);
    }
    // One layer: no base image underneath.
    expect(JSON.parse(docker(["image", "inspect", "--format", "{{json .RootFS.Layers}}", IMAGE]))).toHaveLength(1);
  });

  it("pushes an image through the mounted engine socket to the bucket, and pulls it back", async () => {
    await pushPullRoundTrip(inContainer, "image");
  });
});
