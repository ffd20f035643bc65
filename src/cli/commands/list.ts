/** list: apps, images, tags, environments, and the tag an environment came from. */
import type { Command } from "commander";
import { UsageError } from "../../errors.js";
import { Lister } from "../../services/lister.js";
import { examples, type ActionFactory } from "../app.js";

const parseMonth = (value: string): string => {
  if (!/^\d{4}(0[1-9]|1[0-2])$/.test(value)) throw new UsageError(`invalid --month ${JSON.stringify(value)}: use YYYYMM, e.g. 202507`);
  return value;
};

export function registerList(program: Command, action: ActionFactory): void {
  const list = program
    .command("list")
    .description("List apps, images, version tags and environments in the bucket")
    .addHelpText("after", examples("s3dock list apps", "s3dock list images myapp --month 202507", "s3dock list tags myapp", "s3dock list envs myapp", "s3dock list tag-for myapp production"));

  list
    .command("apps")
    .description("Apps with images, tags or environments")
    .action(
      action("list apps", async (runtime) => {
        const apps = await new Lister(runtime().services()).apps();
        return { data: { apps }, text: apps.length > 0 ? apps : ["No apps found"] };
      }),
    );

  list
    .command("images")
    .argument("<app>")
    .option("--month <YYYYMM>", "only the images pushed that month", parseMonth)
    .description("An app's images, newest first")
    .action(
      action("list images", async (runtime, app: string, options: { month?: string }) => {
        const images = await new Lister(runtime().services()).images(app, options.month);
        const data = { app_name: app, ...(options.month ? { year_month: options.month } : {}), images };
        return { data, text: images.length > 0 ? images.map((image) => `${app}:${image.tag}`) : [`No images found for ${app}`] };
      }),
    );

  list
    .command("tags")
    .argument("<app>")
    .description("An app's version tags, newest version first")
    .action(
      action("list tags", async (runtime, app: string) => {
        const tags = await new Lister(runtime().services()).tags(app);
        return { data: { app_name: app, tags }, text: tags.length > 0 ? tags.map((tag) => `${tag.version} -> ${tag.target_image}`) : [`No tags found for ${app}`] };
      }),
    );

  list
    .command("envs")
    .alias("environments")
    .argument("<app>")
    .description("An app's environments and the image each points to")
    .action(
      action("list envs", async (runtime, app: string) => {
        const environments = await new Lister(runtime().services()).envs(app);
        const text = environments.map((env) => `${env.environment} -> ${env.source_image}${env.source_tag ? ` (via ${env.source_tag})` : ""}`);
        return { data: { app_name: app, environments }, text: text.length > 0 ? text : [`No environments found for ${app}`] };
      }),
    );

  list
    .command("tag-for")
    .argument("<app>")
    .argument("<env>")
    .description("The version an environment was promoted from")
    .action(
      action("list tag-for", async (runtime, app: string, env: string) => {
        const tag = await new Lister(runtime().services()).tagFor(app, env);
        return {
          data: { app_name: app, environment: env, tag: tag ?? "", direct: tag === undefined },
          text: [tag ?? `No tag found for ${app}/${env} (promoted directly from image)`],
        };
      }),
    );
}
