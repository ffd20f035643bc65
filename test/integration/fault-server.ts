/**
 * Real faults for the fault tests: a second radosgw ("gateway B", scripts/test-infra.sh gateway-b)
 * over the same Ceph cluster as the shared gateway, which these tests may kill, restart and
 * firewall without disturbing anyone else's tests on the shared one.
 */
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { ROOT } from "./harness.js";

export const GATEWAY_B_PORT = Number(process.env.RGW_B_PORT ?? 7481);
export const GATEWAY_B_ENDPOINT = `http://127.0.0.1:${GATEWAY_B_PORT}`;

/** Runs scripts/test-infra.sh; returns what it printed (the environment it sets up). */
const infra = (...args: string[]): string =>
  execFileSync(join(ROOT, "scripts/test-infra.sh"), args, {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, RGW_B_PORT: String(GATEWAY_B_PORT) },
  });

export const gatewayB = {
  /** Starts it if it is not answering; idempotent. */
  start: (): void => void infra("gateway-b", "start"),
  /** SIGKILL: open connections drop mid-transfer, new ones are refused. */
  stop: (): void => void infra("gateway-b", "stop"),
};

const dropRule = ["INPUT", "-i", "lo", "-p", "tcp", "--dport", String(GATEWAY_B_PORT), "-j", "DROP"];

/** Whether iptables can filter loopback here (it needs root and a netfilter-capable kernel). */
export function iptablesUsable(): boolean {
  try {
    execFileSync("iptables", ["-L", "INPUT", "-n"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** Silently drops every packet to gateway B: connections hang instead of being refused. */
export function dropGatewayB(): void {
  execFileSync("iptables", ["-I", ...dropRule], { stdio: "ignore" });
}

/** Removes every copy of the drop rule; safe to call when there is none. */
export function undropGatewayB(): void {
  for (;;) {
    try {
      execFileSync("iptables", ["-D", ...dropRule], { stdio: "ignore" });
    } catch {
      return;
    }
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A second dockerd whose data-root is a small tmpfs (scripts/test-infra.sh small-engine), so a
 * load can fill its disk without touching the shared engine. Returns its DOCKER_HOST.
 */
export const smallEngine = {
  up: (): string => /S3DOCK_TEST_SMALL_DOCKER_HOST=(\S+)/.exec(infra("small-engine", "up"))![1]!,
  down: (): void => void infra("small-engine", "down"),
};
