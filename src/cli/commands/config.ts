/** config: show the resolved profile (never a secret), list profiles, write a starter file. */
import { writeFileSync } from "node:fs";
import { resolve } from "node:path";
import type { Command } from "commander";
import { ConfigError } from "../../errors.js";
import { examples, type ActionFactory } from "../app.js";
import { redactEndpoint } from "../redact.js";

export const STARTER_CONFIG = `// s3dock configuration (JSON5). Search order: --config FILE, ./s3dock.json5,
// ~/.s3dock/config.json5, /etc/s3dock/config.json5. Environment variables (S3DOCK_BUCKET,
// S3DOCK_PROFILE, AWS_REGION, AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) beat the file.
{
  default_profile: "default",
  profiles: {
    default: {
      bucket: "s3dock-containers",
      region: "us-east-1",
      // endpoint: "http://127.0.0.1:9000", // an S3-compatible server (path-style addressing)
      // access_key / secret_key: leave out to use the AWS credential chain (AWS_PROFILE, ~/.aws, instance roles)
    },
  },
  docker: {
    compression: "gzip:1", // gzip level 0-9; members are compressed on all cores
  },
  defaults: {
    retry_count: 3,
    log_level: 2, // 1 errors, 2 info, 3 debug
  },
}
`;

export function registerConfig(program: Command, action: ActionFactory): void {
  const config = program
    .command("config")
    .description("Show, list or create configuration")
    .addHelpText("after", examples("s3dock config show", "s3dock config show --profile prod --json", "s3dock config list", "s3dock config init"));

  config
    .command("show")
    .description("The settings the current flags, environment and file resolve to (never the secret key, nor credentials in the endpoint)")
    .action(
      action("config show", async (runtime) => {
        const { config: resolved } = runtime();
        const data = {
          profile: resolved.profile,
          bucket: resolved.bucket,
          region: resolved.region,
          ...(resolved.endpoint ? { endpoint: redactEndpoint(resolved.endpoint) } : {}),
          ...(resolved.credentials ? { access_key: resolved.credentials.accessKeyId } : {}),
          config_file: resolved.configFile ?? "",
          credentials: resolved.credentials ? "static keys" : "AWS default credential chain",
        };
        const text = [
          `Profile:     ${data.profile}`,
          `Bucket:      ${data.bucket}`,
          `Region:      ${data.region}`,
          `Endpoint:    ${data.endpoint ?? "(AWS)"}`,
          `Access key:  ${data.access_key ?? "(none)"}`,
          `Credentials: ${data.credentials}`,
          `Config file: ${data.config_file || "(none: built-in defaults)"}`,
        ];
        return { data, text };
      }),
    );

  config
    .command("list")
    .description("The profiles in the config file")
    .action(
      action("config list", async (runtime) => {
        const { config: resolved } = runtime();
        const profiles = [...resolved.profiles];
        const text = profiles.length > 0
          ? ["Available profiles:", ...profiles.map((name) => `${name === resolved.defaultProfile ? "*" : " "} ${name}`)]
          : ["No profiles configured (built-in default: bucket s3dock-containers, region us-east-1)"];
        return { data: { profiles, default_profile: resolved.defaultProfile }, text };
      }),
    );

  config
    .command("init")
    .argument("[file]", "where to write it", "s3dock.json5")
    .description("Write a starter config file (never overwrites one)")
    .action(
      action("config init", async (runtime, file: string) => {
        const path = resolve(runtime().cwd, file);
        try {
          writeFileSync(path, STARTER_CONFIG, { flag: "wx", mode: 0o600 });
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code === "EEXIST") throw new ConfigError(`${path} already exists: not overwriting it`);
          throw new ConfigError(`cannot write ${path}: ${(error as Error).message}`);
        }
        return { data: { path }, text: [`Wrote ${path}`] };
      }),
    );
}
