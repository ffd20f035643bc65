/**
 * The command-line program: global flags, the commands, and the one place where results and
 * errors are rendered and exit codes chosen.
 */
import { Command, CommanderError, Option } from "commander";
import { UsageError } from "../errors.js";
import { registerBuild } from "./commands/build.js";
import { registerCleanup } from "./commands/cleanup.js";
import { registerConfig } from "./commands/config.js";
import { registerDeploy } from "./commands/deploy.js";
import { registerLifecycle } from "./commands/lifecycle.js";
import { registerList } from "./commands/list.js";
import { registerVersion } from "./commands/version.js";
import { Output, type Io, type Outcome } from "./output.js";
import { Redactor } from "./redact.js";
import { Runtime, type GlobalOptions } from "./runtime.js";
import { TOOL_VERSION } from "./version.js";

export interface AppEnvironment {
  readonly io: Io;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly cwd: string;
}

/** Registers commands: each gets `action(words, handler)` to run its service inside the shared rendering. */
export type ActionFactory = <A extends unknown[]>(
  words: string,
  handler: (runtime: () => Runtime, ...args: A) => Promise<Outcome>,
) => (...args: unknown[]) => Promise<void>;

export function examples(...lines: string[]): string {
  return `\nExamples:\n${lines.map((line) => `  $ ${line}`).join("\n")}\n`;
}

const GLOBAL_OPTIONS_WITH_VALUES = new Set(["--config", "-p", "--profile", "-b", "--bucket", "-l", "--log-level"]);

/** The command's words (`list images`) read off argv, for errors raised before any action runs. */
function commandWordsOf(argv: readonly string[], program: Command): string {
  const positional = argv.filter((arg, i) => !arg.startsWith("-") && !GLOBAL_OPTIONS_WITH_VALUES.has(argv[i - 1] ?? ""));
  const words: string[] = [];
  let commands = program.commands;
  for (const word of positional) {
    const command = commands.find((c) => c.name() === word || c.aliases().includes(word));
    if (!command) break;
    words.push(command.name());
    commands = command.commands;
  }
  return words.join(" ") || "s3dock";
}

export async function runCli(argv: readonly string[], environment: AppEnvironment): Promise<number> {
  const redactor = new Redactor();
  const output = new Output(environment.io, redactor);
  const wantsJson = argv.includes("--json");
  const debug = argv.some((arg, i) => /^(-l|--log-level)(=3)?$/.test(arg) && (arg.endsWith("=3") || argv[i + 1] === "3") || arg === "-l3");
  let exitCode = 0;
  let commandWords = "s3dock";

  const action: ActionFactory = <A extends unknown[]>(words: string, handler: (runtime: () => Runtime, ...args: A) => Promise<Outcome>) =>
    async (...args: unknown[]) => {
      commandWords = words;
      const command = args[args.length - 1] as Command;
      const globals = command.optsWithGlobals<GlobalOptions & Record<string, unknown>>();
      let runtime: Runtime | undefined;
      const getRuntime = () => (runtime ??= new Runtime(globals, redactor, environment.env, environment.cwd));
      const outcome = await handler(getRuntime, ...(args.slice(0, -1) as A));
      output.success(words, outcome, globals.json === true);
    };

  const program = new Command("s3dock")
    .description("Ship Docker images through an S3-compatible bucket: no registry, no `latest`, no mutable tags.")
    .addOption(new Option("--config <file>", "config file (default: ./s3dock.json5, ~/.s3dock/config.json5, /etc/s3dock/config.json5)"))
    .addOption(new Option("-p, --profile <name>", "config profile (env S3DOCK_PROFILE)"))
    .addOption(new Option("-b, --bucket <name>", "bucket, overriding the profile (env S3DOCK_BUCKET)"))
    .addOption(new Option("-l, --log-level <level>", "1 errors, 2 info (default), 3 debug"))
    .addOption(new Option("--json", "print one JSON document on stdout"))
    .version(TOOL_VERSION.version, "-v, --version", "print the version")
    .showSuggestionAfterError(true)
    .exitOverride()
    .configureOutput({
      writeOut: (text) => environment.io.stdout(text),
      writeErr: (text) => environment.io.stderr(text),
      outputError: () => undefined,
    })
    .addHelpText(
      "after",
      examples(
        "s3dock build myapp",
        "s3dock push myapp:20250721-2118-f7a5a27",
        "s3dock tag myapp:20250721-2118-f7a5a27 v1.2.0",
        "s3dock promote myapp v1.2.0 production",
        "s3dock pull myapp production",
        "s3dock deploy --blue-green myapp production",
      ) + "\nExit status: 0 success, 1 the operation failed, 2 usage or configuration error.\n",
    );

  for (const register of [registerBuild, registerLifecycle, registerList, registerConfig, registerVersion, registerDeploy, registerCleanup]) {
    register(program, action);
  }
  // Every command inherits the program's output settings, so usage errors render through us.
  const configure = (command: Command) => {
    command.exitOverride().configureOutput({
      writeOut: (text) => environment.io.stdout(text),
      writeErr: (text) => environment.io.stderr(text),
      outputError: () => undefined,
    });
    command.commands.forEach(configure);
  };
  program.commands.forEach(configure);

  try {
    if (argv.length === 0) {
      program.outputHelp({ error: true });
      return 2;
    }
    await program.parseAsync([...argv], { from: "user" });
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === "commander.helpDisplayed" || error.code === "commander.version") return 0;
      // A command group without its subcommand (`s3dock list`) shows its help: that is a usage error.
      if (error.code === "commander.help") return argv.includes("--help") || argv.includes("-h") ? 0 : 2;
      const message = error.message.replace(/^error: /, "");
      exitCode = output.failure(commandWordsOf(argv, program), new UsageError(`${message} (see --help)`), wantsJson, debug);
    } else {
      exitCode = output.failure(commandWords, error, wantsJson, debug);
    }
  }
  return exitCode;
}
