/** build: an image from a clean git tree, tagged from its commit. */
import type { Command } from "commander";
import { SimpleGitRepo } from "../../clients/git.js";
import { Builder } from "../../services/builder.js";
import { examples, type ActionFactory } from "../app.js";

interface BuildFlags {
  path: string;
  dockerfile: string;
  context?: string;
  platform?: string;
}

export function registerBuild(program: Command, action: ActionFactory): void {
  program
    .command("build")
    .argument("<app>", "the app name (a Docker repository name: lowercase, digits, . _ -)")
    .option("--path <dir>", "directory with the Dockerfile", ".")
    .option("--dockerfile <file>", "Dockerfile, relative to --path", "Dockerfile")
    .option("--context <dir>", "build context (default: --path)")
    .option("--platform <platform>", "target platform, e.g. linux/amd64")
    .description("Build an image from a clean git tree, tagged app:YYYYMMDD-HHMM-<hash7> from the commit; prints the tag")
    .addHelpText("after", examples("s3dock build myapp", "TAG=$(s3dock build myapp --path services/web) && s3dock push \"$TAG\""))
    .action(
      action("build", async (runtime, app: string, flags: BuildFlags) => {
        const rt = runtime();
        const builder = new Builder({ docker: rt.docker, logger: rt.logger }, (directory) => SimpleGitRepo.open(directory));
        const showOutput = !rt.json && rt.config.logLevel > 1;
        const result = await builder.build({
          app,
          path: flags.path,
          dockerfile: flags.dockerfile,
          context: flags.context,
          platform: flags.platform,
          onOutput: (line) => (showOutput ? process.stderr.write(`${line}\n`) : rt.logger.debug(line)),
        });
        return { data: result, text: [result.image_tag] };
      }),
    );
}
