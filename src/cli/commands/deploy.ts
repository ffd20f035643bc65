/** deploy --blue-green / --rollback: replace an environment's running container on one Docker engine. */
import { Command, Option } from "commander";
import { UsageError } from "../../errors.js";
import { Deployer, type DeployResult } from "../../services/deployer.js";
import { examples, type ActionFactory } from "../app.js";

const parseSeconds = (value: string): number => {
  if (!/^\d+(\.\d+)?$/.test(value)) throw new UsageError(`expected a number of seconds, got ${JSON.stringify(value)}`);
  return Number(value);
};

function summary(result: DeployResult): string {
  const name = `${result.app} ${result.env}`;
  if (result.skipped) return `${name}: ${result.image} is already live on ${result.color}: nothing to do`;
  const was = result.previous_image ? `was ${result.previous_image}` : "first deploy";
  return `${name}: ${result.image} live on ${result.color} (${was}; healthy in ${(result.health_check_ms / 1000).toFixed(1)}s)`;
}

export function registerDeploy(program: Command, action: ActionFactory): void {
  program
    .command("deploy")
    .argument("<app>")
    .argument("<env>")
    .option("--blue-green", "start the other color beside the live one, switch when healthy (the default and only strategy)")
    .option("--rollback", "go back to the image the live container replaced, and point the environment at it again")
    .addOption(new Option("--timeout <seconds>", "how long the new container may take to become healthy (overrides health.timeout_seconds; default 60)").argParser(parseSeconds))
    .addOption(new Option("--wait-lock <seconds>", "wait this long for another deploy of the same app and env to finish (0: refuse at once)").default(0).argParser(parseSeconds))
    .description("Run an environment's current image on the Docker engine (DOCKER_HOST), switching with no dropped request")
    .addHelpText(
      "after",
      examples(
        "s3dock deploy --blue-green myapp production",
        "s3dock deploy --rollback myapp production",
        "s3dock deploy myapp staging --timeout 120 --wait-lock 300",
        "DOCKER_HOST=ssh://ops@web1 s3dock deploy --json myapp production",
      ) +
        `
How it works: the environment's pointer names the image (pulled when the engine lacks it). The new
container ({app}.{env}.blue or .green) joins the network (deploy.apps.<app>.network, default
"s3dock") with the alias {alias}.{color}, and must pass its health check: health.command, or
health.http_path probed with the image's wget on the app's port, or the image's own HEALTHCHECK, or
else simply stay up for 3s. Then it takes the stable alias (default {app}.{env}) that nginx, Traefik
or Caddy resolve through Docker's DNS; both serve for drain_seconds (default 2), and the old
container leaves the network, stops and is removed. A failed health check removes the new container,
leaves the old one serving and exits 1. Deploying the image already live does nothing. Containers
are found by their s3dock.app and s3dock.env labels, and none without this app's and env's labels
is ever stopped or removed.

With publish: "HOST:CONTAINER" (host-port mode) the old container must stop before the new one can
bind the port: requests fail for the new container's start plus health check (a second or two for
most apps); if it fails, the old container is started again.

Config (--config or s3dock.json5), per app and optionally per environment:
  deploy: { apps: { myapp: { port: 8080, health: { http_path: "/health", timeout_seconds: 60 },
    network: "web", alias: "myapp", env: { LOG_LEVEL: "info" }, env_file: "prod.env",
    volumes: ["data:/data"], restart: "unless-stopped", memory: "512m", cpus: 1, user: "1000",
    envs: { staging: { memory: "256m" } } } } }
`,
    )
    .action(
      action("deploy", async (runtime, app: string, env: string, options: { blueGreen?: boolean; rollback?: boolean; timeout?: number; waitLock: number }) => {
        const rt = runtime();
        const deployer = new Deployer(rt.services(), rt.containers, rt.config.deploy);
        const settings = { timeoutSeconds: options.timeout, waitLockSeconds: options.waitLock };
        const result = options.rollback ? await deployer.rollback(app, env, settings) : await deployer.deploy(app, env, settings);
        return { data: result, text: [summary(result)] };
      }),
    );
}
