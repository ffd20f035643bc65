/** deploy: filled in by the deploy/cleanup work; until then it says so and exits 2. */
import type { Command } from "commander";
import { UsageError } from "../../errors.js";
import { type ActionFactory } from "../app.js";

export function registerDeploy(program: Command, action: ActionFactory): void {
  program
    .command("deploy")
    .allowUnknownOption()
    .argument("[args...]")
    .description("not implemented yet")
    .action(
      action("deploy", async () => {
        throw new UsageError("deploy is not implemented yet");
      }),
    );
}
