/** list and current: read-only views of the bucket. */
import pMap from "p-map";
import { IntegrityError, NotFoundError } from "../errors.js";
import { appFromPrefix, nameInPrefix, pointersPrefix, ROOT_PREFIXES, tagsPrefix } from "../domain/keys.js";
import { compareVersionsDescending, parseAppName, parseEnvName } from "../domain/names.js";
import { ImageCatalog } from "./catalog.js";
import type { ServiceContext } from "./context.js";
import { imageNameOf, References } from "./references.js";

/** Tag and pointer documents read at once. */
const READ_CONCURRENCY = 16;

export interface ImageEntry {
  readonly app_name: string;
  readonly tag: string;
  readonly s3_path: string;
  readonly year_month: string;
}

export interface TagEntry {
  readonly app_name: string;
  readonly version: string;
  readonly target_image: string;
  readonly s3_path: string;
}

export interface EnvEntry {
  readonly app_name: string;
  readonly environment: string;
  readonly target_type: "image" | "tag";
  readonly target_path: string;
  readonly source_tag?: string;
  readonly source_image: string;
}

export interface CurrentResult {
  readonly app_name: string;
  readonly environment: string;
  readonly image_ref: string;
  readonly source_tag?: string;
  readonly s3_path: string;
}

export class Lister {
  private readonly catalog: ImageCatalog;
  private readonly references: References;

  constructor(private readonly ctx: ServiceContext) {
    this.catalog = new ImageCatalog(ctx.store);
    this.references = new References(ctx.store, this.catalog);
  }

  async apps(): Promise<string[]> {
    const prefixes = await Promise.all(ROOT_PREFIXES.map((root) => this.ctx.store.listPrefixes(root)));
    return [...new Set(prefixes.flat().flatMap((prefix) => appFromPrefix(prefix) ?? []))].sort();
  }

  async images(appInput: string, month?: string): Promise<ImageEntry[]> {
    const app = parseAppName(appInput);
    const images = await this.catalog.list(app, month);
    return images.map((image) => ({
      app_name: app,
      tag: `${image.gitTime}-${image.gitHash}`,
      s3_path: `images/${app}/${image.month}/${app}-${image.gitTime}-${image.gitHash}.tar.gz`,
      year_month: image.month,
    }));
  }

  private async documentNames(prefix: string): Promise<string[]> {
    const names: string[] = [];
    for await (const object of this.ctx.store.list(prefix)) {
      const name = nameInPrefix(prefix, object.key);
      if (name !== undefined) names.push(name);
    }
    return names;
  }

  /** A tag or pointer for a listing; an unreadable one is skipped with a warning, as Go's list skips it, so one bad document does not hide the rest. */
  private async readListed(key: string) {
    try {
      return await this.references.read(key);
    } catch (error) {
      if (!(error instanceof IntegrityError)) throw error;
      this.ctx.logger.warn(`skipped: ${error.message}`);
      return undefined;
    }
  }

  /** Version tags, newest version first (semver order, so v1.10.0 comes before v1.9.0). */
  async tags(appInput: string): Promise<TagEntry[]> {
    const app = parseAppName(appInput);
    const prefix = tagsPrefix(app);
    const versions = await this.documentNames(prefix);
    const entries = await pMap(
      versions,
      async (version) => {
        const tag = await this.readListed(`${prefix}${version}.json`);
        return tag && { app_name: app, version, target_image: imageNameOf(tag.document), s3_path: tag.key };
      },
      { concurrency: READ_CONCURRENCY },
    );
    return entries.filter((entry) => entry !== undefined).sort((a, b) => compareVersionsDescending(a.version, b.version));
  }

  async envs(appInput: string): Promise<EnvEntry[]> {
    const app = parseAppName(appInput);
    const prefix = pointersPrefix(app);
    const envs = await this.documentNames(prefix);
    const entries = await pMap(
      envs,
      async (environment): Promise<EnvEntry | undefined> => {
        const pointer = await this.readListed(`${prefix}${environment}.json`);
        if (!pointer) return undefined;
        const { target_type, target_path, source_tag } = pointer.document;
        return {
          app_name: app,
          environment,
          target_type,
          target_path,
          ...(source_tag ? { source_tag } : {}),
          source_image: imageNameOf(pointer.document),
        };
      },
      { concurrency: READ_CONCURRENCY },
    );
    return entries.filter((entry) => entry !== undefined).sort((a, b) => a.environment.localeCompare(b.environment));
  }

  /** The version an environment was promoted from, or undefined when it was promoted straight from an image. */
  async tagFor(appInput: string, envInput: string): Promise<string | undefined> {
    const app = parseAppName(appInput);
    const env = parseEnvName(envInput);
    const pointer = await this.references.readPointer(app, env);
    if (!pointer) throw new NotFoundError(`environment ${env} of ${app} has no image (promote one first: s3dock promote ${app}:<tag> ${env})`);
    if (pointer.document.target_type !== "tag") return undefined;
    return pointer.document.source_tag ?? pointer.document.target_path.split("/").pop()!.replace(/\.json$/, "");
  }

  async current(appInput: string, envInput: string): Promise<CurrentResult> {
    const app = parseAppName(appInput);
    const env = parseEnvName(envInput);
    const resolved = await this.references.resolvePointer(app, env);
    return {
      app_name: app,
      environment: env,
      image_ref: resolved.image.name,
      ...(resolved.tag ? { source_tag: resolved.tag.version } : {}),
      s3_path: resolved.image.key,
    };
  }
}
