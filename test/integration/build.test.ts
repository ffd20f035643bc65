/**
 * build against the real engine: the clean-tree rule, any subdirectory, the tag from the commit's
 * UTC time and hash, .dockerignore exactly as docker applies it, build-stream errors, labels, and
 * stdout carrying only the tag.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type AppRepo, cliEnv, createAppRepo, docker, errorLines, imageExists, removeAppImages, removeDir, runJson, runS3dock, uniqueName } from "./harness.js";

const app = uniqueName("build");
const dockerApp = `${app}-docker`;
const repos: AppRepo[] = [];
let env: Record<string, string>;

const git = (repo: AppRepo, args: string[], extraEnv: Record<string, string> = {}) =>
  execFileSync("git", args, { cwd: repo.dir, encoding: "utf8", env: { ...process.env, ...extraEnv } }).trim();

function newRepo(options: Parameters<typeof createAppRepo>[0] = {}): AppRepo {
  const repo = createAppRepo(options);
  repos.push(repo);
  return repo;
}

/** Lists every path under /data in an image (the Dockerfile copies the context there). */
const filesIn = (image: string): string[] =>
  docker(["run", "--rm", image, "/bin/busybox", "find", "/data"])
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "")
    .sort();

beforeAll(() => {
  // The bucket is never touched by build; a name is still needed for the config to resolve.
  env = cliEnv("s3dock-build-unused");
});

afterAll(() => {
  removeAppImages(app);
  removeAppImages(dockerApp);
  for (const repo of repos) removeDir(repo.dir);
});

describe("build", () => {
  it("tags from the commit's UTC time and short hash, labels the image, and prints only the tag", async () => {
    const repo = newRepo();
    // 23:59:30 at +05:00 is 18:59 UTC: Go would have used the committer's own offset.
    git(repo, ["commit", "-q", "--allow-empty", "-m", "dated"], { GIT_COMMITTER_DATE: "2025-03-04T23:59:30+05:00" });
    const fullHash = git(repo, ["rev-parse", "HEAD"]);
    const expected = `${app}:20250304-1859-${fullHash.slice(0, 7)}`;

    const result = await runS3dock(["build", app], { env, cwd: repo.dir });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toBe(`${expected}\n`);
    expect(imageExists(expected)).toBe(true);
    const labels = JSON.parse(docker(["image", "inspect", "--format", "{{json .Config.Labels}}", expected]));
    expect(labels).toMatchObject({ "s3dock.app": app, "s3dock.git-hash": fullHash, "s3dock.git-time": "20250304-1859" });
    expect(new Date(labels["org.opencontainers.image.created"]).toISOString()).toBe("2025-03-04T18:59:30.000Z");

    const json = await runJson(["build", app], { env, cwd: repo.dir });
    expect(json.code, json.stderr).toBe(0);
    expect(json.doc).toMatchObject({
      success: true,
      command: "build",
      data: { image_tag: expected, app_name: app, git_hash: fullHash.slice(0, 7), git_time: "20250304-1859" },
    });
  });

  it("refuses modified or staged tracked files and names them; untracked files are fine", async () => {
    const repo = newRepo();
    writeFileSync(join(repo.dir, "www/index.html"), "changed\n");
    const modified = await runS3dock(["build", app], { env, cwd: repo.dir });
    expect(modified.code).toBe(1);
    expect(modified.stdout).toBe("");
    expect(errorLines(modified.stderr)).toHaveLength(1);
    expect(modified.stderr).toContain("www/index.html");
    git(repo, ["checkout", "--", "www/index.html"]);

    writeFileSync(join(repo.dir, "staged.txt"), "staged\n");
    git(repo, ["add", "staged.txt"]);
    const staged = await runS3dock(["build", app], { env, cwd: repo.dir });
    expect(staged.code).toBe(1);
    expect(staged.stderr).toContain("staged.txt");
    expect(staged.stderr).not.toContain("www/index.html");

    git(repo, ["reset", "-q", "staged.txt"]);
    writeFileSync(join(repo.dir, "untracked.txt"), "untracked\n");
    const untracked = await runS3dock(["build", app], { env, cwd: repo.dir });
    expect(untracked.code, untracked.stderr).toBe(0);
    expect(untracked.stdout).toBe(`${app}:${formatTag(repo)}\n`);
  });

  it("works from a subdirectory of the repository", async () => {
    const repo = newRepo();
    const fromRoot = await runS3dock(["build", app], { env, cwd: repo.dir });
    const fromSub = await runS3dock(["build", app, "--path", ".."], { env, cwd: join(repo.dir, "www") });
    expect(fromSub.code, fromSub.stderr).toBe(0);
    expect(fromSub.stdout).toBe(fromRoot.stdout);

    // A Dockerfile that lives in a subdirectory, built from there with the default --path.
    mkdirSync(join(repo.dir, "services/web"), { recursive: true });
    execFileSync("cp", ["/bin/busybox", join(repo.dir, "services/web/busybox")]);
    writeFileSync(join(repo.dir, "services/web/Dockerfile"), 'FROM scratch\nCOPY busybox /bin/busybox\nCMD ["/bin/busybox", "true"]\n');
    git(repo, ["add", "-A"]);
    git(repo, ["commit", "-q", "-m", "service"]);
    const nested = await runS3dock(["build", app], { env, cwd: join(repo.dir, "services/web") });
    expect(nested.code, nested.stderr).toBe(0);
    expect(nested.stdout).toBe(`${app}:${formatTag(repo)}\n`);
  });

  it("honours .dockerignore exactly as docker does: ! exceptions, **, directories", async () => {
    const repo = newRepo();
    const files: Record<string, string> = {
      "secret.txt": "secret",
      "logs/a.log": "a",
      "logs/keep.log": "keep",
      "top.tmp": "tmp",
      "deep/x/y/z.tmp": "tmp",
      "deep/x/y/kept.txt": "kept",
      "cache/big/file.bin": "bin",
      "docs/a.md": "a",
      "docs/README.md": "readme",
      "x.bak": "bak",
      "sub/y.bak": "bak",
    };
    for (const [name, content] of Object.entries(files)) {
      mkdirSync(join(repo.dir, name, ".."), { recursive: true });
      writeFileSync(join(repo.dir, name), content);
    }
    writeFileSync(join(repo.dir, ".dockerignore"), ["# comment", "secret.txt", "logs", "!logs/keep.log", "**/*.tmp", "cache/", "docs/*.md", "!docs/README.md", "*.bak", ""].join("\n"));
    git(repo, ["add", "-A"]);
    git(repo, ["commit", "-q", "-m", "ignore rules"]);

    const tag = (await runS3dock(["build", app], { env, cwd: repo.dir })).stdout.trim();
    expect(tag).toBe(`${app}:${formatTag(repo)}`);
    const ours = filesIn(tag);
    for (const present of ["/data/logs/keep.log", "/data/docs/README.md", "/data/sub/y.bak", "/data/deep/x/y/kept.txt", "/data/www/index.html", "/data/Dockerfile"]) {
      expect(ours).toContain(present);
    }
    for (const absent of ["/data/secret.txt", "/data/logs/a.log", "/data/top.tmp", "/data/deep/x/y/z.tmp", "/data/cache", "/data/docs/a.md", "/data/x.bak"]) {
      expect(ours).not.toContain(absent);
    }
    // The reference: the docker CLI's own build of the same directory.
    docker(["build", "-q", "-t", `${dockerApp}:reference`, repo.dir]);
    expect(ours).toEqual(filesIn(`${dockerApp}:reference`));
  });

  it("fails with exit 1 when the daemon's build stream reports an error", async () => {
    for (const extra of ["RUN /bin/busybox false", "COPY missing-file.txt /missing"]) {
      const repo = newRepo({ dockerfileExtra: extra });
      const result = await runS3dock(["build", app], { env, cwd: repo.dir });
      expect(result.code, extra).toBe(1);
      expect(result.stdout).toBe("");
      expect(result.stderr).toMatch(/^s3dock: build of .* failed/m);
      expect(imageExists(`${app}:${formatTag(repo)}`)).toBe(false);

      const json = await runJson(["build", app], { env, cwd: repo.dir });
      expect(json.code).toBe(1);
      expect(json.doc).toMatchObject({ success: false, command: "build" });
    }
  });
});

/** The tag s3dock derives from the repo's HEAD: committer time in UTC, then the short hash. */
function formatTag(repo: AppRepo): string {
  const [hash, seconds] = git(repo, ["log", "-1", "--format=%h %ct", "--abbrev=7"]).split(" ");
  const iso = new Date(Number(seconds) * 1000).toISOString();
  return `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}-${iso.slice(11, 13)}${iso.slice(14, 16)}-${hash}`;
}
