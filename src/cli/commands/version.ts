/** version: the bare version, or with --full the commit and build date too. */
import type { Command } from "commander";
import { TOOL_VERSION } from "../version.js";
import { type ActionFactory } from "../app.js";

export function registerVersion(program: Command, action: ActionFactory): void {
  program
    .command("version")
    .option("--full", "also print the commit and build date")
    .description("Print the version")
    .action(
      action("version", async (_runtime, options: { full?: boolean }) => {
        const { version, commit, date } = TOOL_VERSION;
        return {
          data: { version, commit, date },
          text: options.full ? [`s3dock version ${version}`, `commit: ${commit}`, `built: ${date}`] : [version],
        };
      }),
    );
}
