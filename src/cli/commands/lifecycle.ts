/** push, tag, promote, pull, current: the image lifecycle. */
import { Command, Option } from "commander";
import { UsageError } from "../../errors.js";
import type { StorageFormat } from "../../domain/config.js";
import { isImageRef } from "../../domain/names.js";
import { Lister } from "../../services/lister.js";
import { Promoter, type PromoteSource } from "../../services/promoter.js";
import { Puller } from "../../services/puller.js";
import { Pusher } from "../../services/pusher.js";
import { Tagger } from "../../services/tagger.js";
import { examples, type ActionFactory } from "../app.js";

const parseCount = (value: string): number => {
  if (!/^\d+$/.test(value)) throw new UsageError(`expected a whole number, got ${JSON.stringify(value)}`);
  return Number(value);
};

export function registerLifecycle(program: Command, action: ActionFactory): void {
  program
    .command("push")
    .argument("<image>", "app:YYYYMMDD-HHMM-hash7, as printed by s3dock build")
    .addOption(
      new Option("--format <format>", 'how to store it: "layers" (only layers the bucket lacks are uploaded) or "archive" (one .tar.gz Go hosts can pull); default: storage.format, else layers').choices([
        "layers",
        "archive",
      ]),
    )
    .option("--force", "replace different content stored under this name (the old image is archived first, and the versions and environments naming it are listed)")
    .description("Store a built image in the bucket (skipped when the same image is already there; different content under the name is refused)")
    .addHelpText(
      "after",
      examples(
        "s3dock push myapp:20250721-2118-f7a5a27",
        "s3dock push --format archive myapp:20250721-2118-f7a5a27   # for hosts that run the Go tool",
        "s3dock push --json myapp:20250721-2118-f7a5a27 | jq -r .data.s3_key",
      ),
    )
    .action(
      action("push", async (runtime, image: string, options: { format?: StorageFormat; force?: boolean }) => {
        const result = await new Pusher(runtime().services()).push(image, { format: options.format, force: options.force });
        const { replaced } = result;
        if (!replaced) return { data: result, text: [] };
        const names = [
          replaced.versions.length > 0 ? `versions ${replaced.versions.join(", ")}` : "",
          replaced.environments.length > 0 ? `environments ${replaced.environments.join(", ")}` : "",
        ].filter((part) => part !== "");
        return {
          data: result,
          text: [
            `replaced ${result.image_ref} (was image ${replaced.previous_image_id ?? "without a recorded ID"}, now ${result.image_id})` +
              (replaced.archive_key ? `; the old image is archived at ${replaced.archive_key}` : "; the old object was already gone, nothing archived"),
            names.length > 0 ? `now naming the new content: ${names.join("; ")}` : "no version or environment names it",
          ],
        };
      }),
    );

  program
    .command("tag")
    .argument("<image>", "app:YYYYMMDD-HHMM-hash7")
    .argument("<version>", "semantic version, e.g. v1.2.0")
    .option("--force", "replace an existing version tag (the old one is archived and audited)")
    .description("Give a stored image a version; versions are immutable")
    .addHelpText("after", examples("s3dock tag myapp:20250721-2118-f7a5a27 v1.2.0"))
    .action(
      action("tag", async (runtime, image: string, version: string, options: { force?: boolean }) => {
        const result = await new Tagger(runtime().services()).tag(image, version, { force: options.force });
        return { data: result, text: [] };
      }),
    );

  program
    .command("promote")
    .argument("<source>", "app:YYYYMMDD-HHMM-hash7, or the app when a version follows")
    .argument("<env-or-version>", "the environment, or the version when promoting a tag")
    .argument("[env]", "the environment, when promoting a tag")
    .addOption(new Option("--retries <n>", "re-read and retry this many times when someone else promotes at the same moment").default(0).argParser(parseCount))
    .description("Point an environment at an image or a version")
    .addHelpText("after", examples("s3dock promote myapp:20250721-2118-f7a5a27 staging", "s3dock promote myapp v1.2.0 production"))
    .action(
      action("promote", async (runtime, first: string, second: string, third: string | undefined, options: { retries: number }) => {
        let source: PromoteSource;
        let env: string;
        if (third !== undefined) {
          source = { app: first, version: second };
          env = third;
        } else {
          if (!isImageRef(first)) {
            throw new UsageError(`promote takes <app:tag> <env> or <app> <version> <env>; ${JSON.stringify(first)} is not an image reference`);
          }
          source = { image: first };
          env = second;
        }
        const result = await new Promoter(runtime().services()).promote(source, env, { retries: options.retries });
        return { data: result, text: [] };
      }),
    );

  program
    .command("pull")
    .argument("<app>", "the app")
    .argument("<target>", "an environment, a version (v1.2.0) or an image tag (20250721-2118-f7a5a27)")
    .option("--force", "download and load even when the engine already has the image")
    .description("Load an environment's (or a version's) image into the Docker engine, verified")
    .addHelpText("after", examples("s3dock pull myapp production", "s3dock pull myapp v1.2.0"))
    .action(
      action("pull", async (runtime, app: string, target: string, options: { force?: boolean }) => {
        const result = await new Puller(runtime().services()).pull(app, target, { force: options.force });
        return { data: result, text: [] };
      }),
    );

  program
    .command("current")
    .argument("<app>")
    .argument("<env>")
    .description("Print the image an environment points to, as app:tag")
    .addHelpText("after", examples("s3dock current myapp production", 'docker run -d "$(s3dock current myapp production)"'))
    .action(
      action("current", async (runtime, app: string, env: string) => {
        const result = await new Lister(runtime().services()).current(app, env);
        return { data: result, text: [result.image_ref] };
      }),
    );
}
