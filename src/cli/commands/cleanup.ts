/** cleanup: filled in by the deploy/cleanup work; until then it says so and exits 2. */
import type { Command } from "commander";
import { UsageError } from "../../errors.js";
import { type ActionFactory } from "../app.js";

export function registerCleanup(program: Command, action: ActionFactory): void {
  program
    .command("cleanup")
    .allowUnknownOption()
    .argument("[args...]")
    .description("not implemented yet")
    .action(
      action("cleanup", async () => {
        throw new UsageError("cleanup is not implemented yet");
      }),
    );
}
