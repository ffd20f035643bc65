/** Deployer, its lock and settings, and Cleaner's re-check, driven through in-memory fakes. */
import { beforeEach, describe, expect, it } from "vitest";
import type { ContainerEngine, ContainerSpec, ContainerState, ContainerSummary } from "../../src/clients/containers.js";
import { demultiplexLogs } from "../../src/clients/containers.js";
import type { DeployConfig } from "../../src/domain/deploy-config.js";
import { ConfigError, ConflictError, OperationError } from "../../src/errors.js";
import { Cleaner } from "../../src/services/cleaner.js";
import { lockName } from "../../src/services/deploy-lock.js";
import { Deployer, LABELS, parseEnvFile, resolveDeploySettings } from "../../src/services/deployer.js";
import { Promoter } from "../../src/services/promoter.js";
import { Pusher } from "../../src/services/pusher.js";
import { fakeContext, type FakeContext } from "./fakes.js";

interface FakeContainer extends ContainerSummary {
  spec: ContainerSpec;
  running: boolean;
  networks: Record<string, readonly string[]>;
}

/** An engine whose containers are healthy unless their image is listed in `failing`. */
class FakeContainers implements ContainerEngine {
  readonly address = "unix:///fake/docker.sock";
  readonly containers = new Map<string, FakeContainer>();
  readonly networks = new Set<string>();
  readonly failing = new Set<string>();
  readonly events: string[] = [];
  private next = 0;

  private find(idOrName: string): FakeContainer | undefined {
    return this.containers.get(idOrName) ?? [...this.containers.values()].find((c) => c.name === idOrName);
  }

  async listContainers(labels: Readonly<Record<string, string>>): Promise<ContainerSummary[]> {
    return [...this.containers.values()].filter((c) => Object.entries(labels).every(([k, v]) => c.labels[k] === v));
  }

  async createContainer(spec: ContainerSpec): Promise<string> {
    if (this.find(spec.name)) throw new ConflictError(`create container ${spec.name}: name in use`);
    const id = `c${this.next++}`;
    this.containers.set(id, {
      id, name: spec.name, image: spec.image, imageId: spec.image, labels: spec.labels, running: false, created: new Date(), spec,
      networks: spec.network ? { [spec.network.name]: spec.network.aliases } : {},
    });
    this.events.push(`create ${spec.name}`);
    return id;
  }

  async startContainer(id: string): Promise<void> {
    this.find(id)!.running = true;
    this.events.push(`start ${this.find(id)!.name}`);
  }

  async inspectContainer(idOrName: string): Promise<ContainerState | undefined> {
    const c = this.find(idOrName);
    if (!c) return undefined;
    const bad = this.failing.has(c.image);
    return {
      id: c.id, running: c.running, status: c.running ? "running" : "created", exitCode: 0, restartCount: 0, startedAt: new Date(),
      health: c.spec.healthCheck ? { status: bad ? "unhealthy" : "healthy", lastOutput: bad ? "wget: server returned error: HTTP/1.1 404 Not Found" : "" } : undefined,
      networks: c.networks,
    };
  }

  async logsTail(): Promise<string> {
    return "httpd started";
  }

  async stopContainer(id: string): Promise<void> {
    this.find(id)!.running = false;
    this.events.push(`stop ${this.find(id)!.name}`);
  }

  async removeContainer(idOrName: string): Promise<void> {
    const c = this.find(idOrName);
    if (!c) return;
    this.containers.delete(c.id);
    this.events.push(`remove ${c.name}`);
  }

  async networkExists(name: string): Promise<boolean> {
    return this.networks.has(name);
  }

  async createNetwork(name: string): Promise<void> {
    this.networks.add(name);
  }

  async connectNetwork(network: string, id: string, aliases: readonly string[]): Promise<void> {
    this.find(id)!.networks[network] = aliases;
    this.events.push(`connect ${this.find(id)!.name} ${aliases.join(",")}`);
  }

  async disconnectNetwork(network: string, id: string): Promise<void> {
    delete this.find(id)!.networks[network];
    this.events.push(`disconnect ${this.find(id)!.name}`);
  }

  byName(name: string): FakeContainer | undefined {
    return this.find(name);
  }
}

const V1 = "shop:20250701-1000-aaaaaaa";
const V2 = "shop:20250702-1000-bbbbbbb";
const BAD = "shop:20250703-1000-ccccccc";
const config: DeployConfig = { apps: { shop: { port: 8080, health: { http_path: "/health", timeout_seconds: 10 }, network: "web", drain_seconds: 0 } } };

let ctx: FakeContext;
let engine: FakeContainers;
let deployer: Deployer;

async function release(image: string): Promise<void> {
  ctx.docker.addImage(image);
  await new Pusher(ctx).push(image);
  await new Promoter(ctx).promote({ image }, "production");
}

beforeEach(() => {
  ctx = fakeContext();
  engine = new FakeContainers();
  deployer = new Deployer(ctx, engine, config, { sleep: async (ms) => ctx.clock.advance(ms) });
});

describe("Deployer", () => {
  it("starts the other color beside the live one and gives it the alias before the old one leaves", async () => {
    await release(V1);
    const first = await deployer.deploy("shop", "production");
    expect(first).toMatchObject({ image: V1, color: "blue", previous_image: undefined, skipped: false, container: "shop.production.blue" });
    expect(engine.networks.has("web")).toBe(true);
    expect(engine.byName("shop.production.blue")!.networks.web).toEqual(["shop.production", "shop.production.blue"]);
    expect(engine.byName("shop.production.blue")!.spec.healthCheck!.test).toEqual(["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/health"]);

    await release(V2);
    engine.events.length = 0;
    const second = await deployer.deploy("shop", "production");
    expect(second).toMatchObject({ image: V2, color: "green", previous_image: V1, skipped: false });
    expect(engine.events).toEqual([
      "create shop.production.s3dock-lock",
      "create shop.production.green",
      "start shop.production.green",
      "disconnect shop.production.green",
      "connect shop.production.green shop.production,shop.production.green",
      "disconnect shop.production.blue",
      "stop shop.production.blue",
      "remove shop.production.blue",
      "remove shop.production.s3dock-lock",
    ]);
    expect(engine.byName("shop.production.green")!.labels).toMatchObject({ [LABELS.image]: V2, [LABELS.previousImage]: V1, [LABELS.color]: "green" });
    expect(engine.byName(lockName("shop", "production"))).toBeUndefined();
    const events = ctx.store.keys("audit/").filter((key) => key.includes("-deploy-"));
    expect(events).toHaveLength(2);
  });

  it("does nothing when the image is already live", async () => {
    await release(V1);
    await deployer.deploy("shop", "production");
    engine.events.length = 0;
    expect(await deployer.deploy("shop", "production")).toMatchObject({ skipped: true, color: "blue" });
    expect(engine.events.filter((e) => !e.includes("s3dock-lock"))).toEqual([]);
  });

  it("removes a new container that fails its health check and leaves the live one serving", async () => {
    await release(V1);
    await deployer.deploy("shop", "production");
    engine.failing.add(BAD);
    await release(BAD);
    const failure = await deployer.deploy("shop", "production").catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(OperationError);
    expect((failure as Error).message).toContain("the new container shop.production.green failed its health check; the live container keeps serving");
    expect((failure as OperationError).details.join("\n")).toContain("404 Not Found");
    expect((failure as OperationError).details.join("\n")).toContain("httpd started");
    expect(engine.byName("shop.production.green")).toBeUndefined();
    const failed = ctx.store.keys("audit/").filter((key) => key.includes("-deploy-")).map((key) => ctx.store.json(key)!.details as Record<string, unknown>);
    expect(failed.filter((details) => details.result === "failed")).toEqual([expect.objectContaining({ image_reference: BAD, environment: "production" })]);
    expect(engine.byName("shop.production.blue")).toMatchObject({ running: true, networks: { web: ["shop.production", "shop.production.blue"] } });
  });

  it("rolls back to the previous image and moves the pointer back", async () => {
    await release(V1);
    await deployer.deploy("shop", "production");
    await release(V2);
    await deployer.deploy("shop", "production");
    const result = await deployer.rollback("shop", "production");
    expect(result).toMatchObject({ image: V1, previous_image: V2, color: "blue", pointer_moved: true });
    expect(ctx.store.json("pointers/shop/production.json")).toMatchObject({ source_image: V1 });
    expect(ctx.store.keys("audit/").some((key) => key.includes("-rollback-"))).toBe(true);
  });

  it("refuses while another deploy holds the lock, naming the holder", async () => {
    await release(V1);
    await engine.createContainer({ name: lockName("shop", "production"), image: V1, labels: { "s3dock.lock": "shop/production", "s3dock.locked-at": ctx.clock.now().toISOString(), "s3dock.holder": "bob@web1 pid 7" } });
    await expect(deployer.deploy("shop", "production")).rejects.toThrow(/another deploy of shop production is running \(lock shop\.production\.s3dock-lock held by bob@web1 pid 7/);
    expect(engine.byName("shop.production.blue")).toBeUndefined();
  });

  it("never removes a container whose labels are not this app's and env's, even under the new color's name", async () => {
    await release(V1);
    await engine.createContainer({ name: "shop.production.blue", image: V1, labels: { [LABELS.app]: "other", [LABELS.env]: "x" } });
    await expect(deployer.deploy("shop", "production")).rejects.toThrow(/a container named shop\.production\.blue exists, and its labels do not say it belongs to shop production: not touching it/);
    expect(engine.byName("shop.production.blue")!.labels[LABELS.app]).toBe("other");
    expect(engine.events.filter((e) => e.startsWith("remove ") && !e.includes("s3dock-lock"))).toEqual([]);
  });

  it("takes over from a container an earlier version deployed: found by its labels, its old alias carried over", async () => {
    await release(V1);
    const oldId = await engine.createContainer({
      name: "shop-production-blue",
      image: V1,
      labels: { [LABELS.app]: "shop", [LABELS.env]: "production", [LABELS.color]: "blue", [LABELS.image]: V1, [LABELS.deployedAt]: "2025-01-01T00:00:00.000Z" },
      network: { name: "web", aliases: ["shop-production", "shop-production-blue"] },
    });
    await engine.startContainer(oldId);
    engine.networks.add("web");
    await release(V2);
    expect(await deployer.deploy("shop", "production")).toMatchObject({ image: V2, previous_image: V1, color: "green", container: "shop.production.green" });
    expect(engine.byName("shop.production.green")!.networks.web).toEqual(["shop.production", "shop.production.green", "shop-production"]);
    expect(engine.byName("shop-production-blue")).toBeUndefined();
  });

  it("breaks a lock left by a deploy that died long ago", async () => {
    await release(V1);
    const old = new Date(ctx.clock.now().getTime() - 60 * 60 * 1000).toISOString();
    await engine.createContainer({ name: lockName("shop", "production"), image: V1, labels: { "s3dock.lock": "shop/production", "s3dock.locked-at": old } });
    expect(await deployer.deploy("shop", "production")).toMatchObject({ image: V1, skipped: false });
  });
});

describe("deploy settings", () => {
  it("needs the port for an http_path health check", () => {
    expect(() => resolveDeploySettings({ health: { http_path: "/health" } }, "shop", "production", {})).toThrow(ConfigError);
  });

  it("turns the config into docker run options", () => {
    const settings = resolveDeploySettings(
      { env: { A: "from-map" }, env_file: "prod.env", memory: "512m", cpus: 1.5, publish: "127.0.0.1:80:8080", user: "1000", health: { command: ["true"] } },
      "shop",
      "production",
      { timeoutSeconds: 5 },
      () => "# comment\nA=from-file\nB=two\n",
    );
    expect(settings.mode).toBe("publish");
    expect(settings.network).toBeUndefined();
    expect(settings.alias).toBe("shop.production");
    expect(settings.healthTimeoutMs).toBe(5000);
    expect(settings.healthCheck?.test).toEqual(["CMD", "true"]);
    expect(settings.container).toMatchObject({
      env: ["A=from-file", "B=two", "A=from-map"],
      memoryBytes: 512 * 1024 * 1024,
      nanoCpus: 1_500_000_000,
      publish: { hostIp: "127.0.0.1", hostPort: 80, containerPort: 8080 },
      user: "1000",
      restart: "unless-stopped",
    });
  });

  it("reads env files as docker does", () => {
    expect(parseEnvFile("X=1\n\n# no\n Y = 2\n")).toEqual(["X=1", "Y = 2"]);
  });

  it("demultiplexes the engine's log frames", () => {
    const build = (stream: number, text: string) => {
      const head = Buffer.alloc(8);
      head[0] = stream;
      head.writeUInt32BE(Buffer.byteLength(text), 4);
      return Buffer.concat([head, Buffer.from(text)]);
    };
    expect(demultiplexLogs(Buffer.concat([build(1, "out\n"), build(2, "err\n")]))).toBe("out\nerr\n");
    expect(demultiplexLogs(Buffer.from("plain tty output"))).toBe("plain tty output");
  });
});

describe("Cleaner.remote", () => {
  async function pushAll(): Promise<Cleaner> {
    for (const image of [V1, V2, BAD]) {
      ctx.docker.addImage(image);
      await new Pusher(ctx).push(image);
    }
    return new Cleaner(ctx);
  }
  const metadataOf = (image: string) => ctx.store.keys("images/").find((key) => key.endsWith(`${image.split(":")[1]}.json`))!;

  it("marks first, then reads references: an image promoted before its mark is unmarked and kept", async () => {
    const cleaner = await pushAll();
    const dry = await cleaner.remote("shop", { olderThanMs: 0, keep: 0, yes: false });
    expect(dry.candidates.map((c) => c.image)).toEqual([BAD, V2, V1]);
    const v1Metadata = metadataOf(V1);
    let promoted = false;
    ctx.store.beforePutText = async (key) => {
      if (key !== v1Metadata || promoted) return;
      promoted = true;
      await new Promoter(ctx).promote({ image: V1 }, "production");
    };
    const before = ctx.store.operations.length;
    const real = await cleaner.remote("shop", { olderThanMs: 0, keep: 0, yes: true });
    expect(real.deleted.map((c) => c.image)).toEqual([BAD, V2]);
    expect(real.skipped).toContainEqual({ image: V1, reason: "named by environment production (since the listing)" });
    expect(ctx.store.json(v1Metadata)!.deleting).toBeUndefined();
    expect((await new Promoter(ctx).promote({ image: V1 }, "staging")).skipped).toBe(false);
    // Per image: the mark (If-Match), then the object, then the metadata.
    const ops = ctx.store.operations.slice(before).filter((o) => (o.op === "putText" || o.op === "delete") && o.key.startsWith("images/") && o.key.includes("ccccccc"));
    expect(ops.map((o) => `${o.op} ${o.key.split(".").pop()}`)).toEqual(["putText json", "delete gz", "delete json"]);
    expect(ops[0]).toHaveProperty("condition.ifMatch");
  });

  it("a promote after the mark is refused and leaves no pointer; the image is deleted", async () => {
    const cleaner = await pushAll();
    const originalDelete = ctx.store.delete.bind(ctx.store);
    let attempt: Promise<unknown> | undefined;
    ctx.store.delete = async (key: string) => {
      attempt ??= new Promoter(ctx).promote({ image: V1 }, "production").catch((error: unknown) => error);
      await attempt;
      return originalDelete(key);
    };
    const real = await cleaner.remote("shop", { olderThanMs: 0, keep: 0, yes: true });
    expect(real.deleted.map((c) => c.image)).toEqual([BAD, V2, V1]);
    expect(String(await attempt)).toMatch(/being deleted by cleanup remote/);
    expect(ctx.store.objects.has("pointers/shop/production.json")).toBe(false);
    // One audit event per deleted image, written as each goes.
    expect(ctx.store.keys("audit/").filter((key) => key.includes("-cleanup-"))).toHaveLength(3);
  });

  it("an image pushed again (skipped) after the listing is left alone", async () => {
    const cleaner = await pushAll();
    const originalList = ctx.store.list.bind(ctx.store);
    let repushed = false;
    ctx.store.list = (prefix: string) => {
      if (prefix.startsWith("tags/") && !repushed) {
        repushed = true;
        return (async function* () {
          await new Pusher(ctx).push(V2);
          yield* originalList(prefix);
        })();
      }
      return originalList(prefix);
    };
    const real = await cleaner.remote("shop", { olderThanMs: 0, keep: 0, yes: true });
    expect(real.deleted.map((c) => c.image)).toEqual([BAD, V1]);
    expect(real.skipped).toContainEqual({ image: V2, reason: "changed since the listing (pushed again?)" });
  });

  it("removes staging objects and push claims older than an hour, by the bucket's clock", async () => {
    const cleaner = await pushAll();
    ctx.store.put(".s3dock/staging/shop/shop-20250101-0000-abcdef0-u1.tar.gz", "partial");
    ctx.store.put(".s3dock/push-claims/shop/shop-20250101-0000-abcdef0.json", "{}");
    const dry = await cleaner.remote("shop", { olderThanMs: 365 * 86_400_000, keep: 0, yes: false });
    expect(dry.leftovers.sort()).toEqual([".s3dock/push-claims/shop/shop-20250101-0000-abcdef0.json", ".s3dock/staging/shop/shop-20250101-0000-abcdef0-u1.tar.gz"]);
    expect(ctx.store.keys(".s3dock/")).toHaveLength(2);
    await cleaner.remote("shop", { olderThanMs: 365 * 86_400_000, keep: 0, yes: true });
    expect(ctx.store.keys(".s3dock/")).toEqual([]);
    // A fresh one belongs to a push under way.
    ctx.clock.current = new Date(Date.UTC(2025, 0, 1));
    ctx.store.put(".s3dock/staging/shop/shop-20250101-0000-abcdef0-u2.tar.gz", "partial");
    expect((await cleaner.remote("shop", { olderThanMs: 0, keep: 0, yes: false })).leftovers).toEqual([]);
  });
});
