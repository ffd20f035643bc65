/** The `deploy` section of the config file: how `deploy --blue-green` runs an app's containers. */
import { z } from "zod";

const deploySettingsShape = {
  /** The port the app listens on inside the container. */
  port: z.number().int().min(1).max(65535).optional(),
  health: z
    .strictObject({
      /**
       * HTTP path probed inside the new container by the engine's health check, with the image's own
       * `wget` (busybox, alpine); without it (and without `command`) the image's own HEALTHCHECK decides.
       */
      http_path: z.string().startsWith("/").optional(),
      /** The probe run inside the container (exec form), e.g. ["curl", "-fsS", "http://127.0.0.1:8080/health"]: beats http_path. */
      command: z.array(z.string().min(1)).min(1).optional(),
      timeout_seconds: z.number().positive().max(3600).optional(),
      interval_seconds: z.number().positive().max(60).optional(),
    })
    .optional(),
  /** User-defined Docker network both colors join; the live one carries the alias. */
  network: z.string().min(1).optional(),
  /** The stable DNS name the proxy resolves; defaults to `{app}.{env}`. */
  alias: z.string().min(1).optional(),
  env: z.record(z.string(), z.string()).optional(),
  env_file: z.string().min(1).optional(),
  volumes: z.array(z.string().min(1)).optional(),
  restart: z.enum(["no", "always", "unless-stopped", "on-failure"]).optional(),
  memory: z.string().regex(/^\d+[bkmg]?$/i, "use e.g. 512m or 2g").optional(),
  cpus: z.number().positive().optional(),
  user: z.string().min(1).optional(),
  /** Host-port mode (`8080:8080`): the simplest setup, with a short gap while the port moves. */
  publish: z.string().regex(/^(\d+\.\d+\.\d+\.\d+:)?\d+:\d+$/, "use HOSTPORT:CONTAINERPORT").optional(),
  command: z.array(z.string()).optional(),
  stop_timeout_seconds: z.number().int().min(0).max(600).optional(),
  /** Seconds both colors serve the alias before the old one leaves, so proxies caching DNS catch up. */
  drain_seconds: z.number().min(0).max(600).optional(),
};

export const deploySettingsSchema = z.strictObject(deploySettingsShape);
export type DeploySettings = z.infer<typeof deploySettingsSchema>;

export const deployAppSchema = z.strictObject({
  ...deploySettingsShape,
  /** Per-environment overrides of the app's settings. */
  envs: z.record(z.string(), deploySettingsSchema).optional(),
});

export const deployConfigSchema = z.strictObject({
  apps: z.record(z.string(), deployAppSchema).optional(),
});
export type DeployConfig = z.infer<typeof deployConfigSchema>;

/**
 * What a deployment is called in the engine. An environment name cannot hold a dot (an app name
 * can), so `{app}.{env}` read from the right is one app and one environment: app `web-api` env
 * `prod` is `web-api.prod`, app `web` env `api-prod` is `web.api-prod`. The dashed `{app}-{env}`
 * of earlier versions made both `web-api-prod`.
 */
export const deploymentName = (app: string, env: string): string => `${app}.${env}`;

/** The container of one color: `{app}.{env}.blue` (also its DNS name on the network). */
export const containerName = (app: string, env: string, color: "blue" | "green"): string => `${deploymentName(app, env)}.${color}`;

/** The alias earlier versions gave by default, ambiguous between apps: only carried over from a live container that has it. */
export const legacyAlias = (app: string, env: string): string => `${app}-${env}`;

/** The app's settings with the environment's overrides on top (env maps merge key by key). */
export function deploySettingsFor(config: DeployConfig, app: string, env: string): DeploySettings {
  const { envs, ...base } = config.apps?.[app] ?? {};
  const override = envs?.[env] ?? {};
  return {
    ...base,
    ...override,
    health: { ...base.health, ...override.health },
    env: { ...base.env, ...override.env },
  };
}
