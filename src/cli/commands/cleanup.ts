/** cleanup local | remote: remove images nothing refers to any more. */
import { Command, Option } from "commander";
import { parseDuration } from "../../domain/config.js";
import { UsageError } from "../../errors.js";
import { Cleaner } from "../../services/cleaner.js";
import { examples, type ActionFactory } from "../app.js";
import { formatBytes } from "../output.js";

const parseCount = (value: string): number => {
  if (!/^\d+$/.test(value)) throw new UsageError(`expected a whole number, got ${JSON.stringify(value)}`);
  return Number(value);
};

const parseAge = (value: string): number => {
  if (!/^\d+(\.\d+)?(ms|s|m|h|d)$/.test(value)) throw new UsageError(`expected an age like 90d, 12h or 30m, got ${JSON.stringify(value)}`);
  return parseDuration(value, "age");
};

export function registerCleanup(program: Command, action: ActionFactory): void {
  const cleanup = program.command("cleanup").description("Remove images that nothing refers to any more");

  cleanup
    .command("local")
    .argument("<app>")
    .addOption(new Option("--keep <n>", "always keep the newest N images").default(3).argParser(parseCount))
    .option("--dry-run", "only print what would be removed")
    .description("Remove the app's older images from the Docker engine (never one a container uses or an env pointer names)")
    .addHelpText("after", examples("s3dock cleanup local myapp", "s3dock cleanup local myapp --keep 5 --dry-run"))
    .action(
      action("cleanup local", async (runtime, app: string, options: { keep: number; dryRun?: boolean }) => {
        const result = await new Cleaner(runtime().services()).local(app, { keep: options.keep, dryRun: options.dryRun === true });
        const verb = result.dry_run ? "would remove" : "removed";
        const text = result.removed.length === 0 ? [`nothing to remove for ${result.app}`] : result.removed.map((image) => `${verb} ${image}`);
        return { data: result, text };
      }),
    );

  cleanup
    .command("remote")
    .argument("<app>")
    .addOption(new Option("--older-than <age>", "delete unreferenced images pushed longer ago than this").default(parseAge("90d"), "90d").argParser(parseAge))
    .addOption(new Option("--keep <n>", "always keep the newest N images, referenced or not").default(5).argParser(parseCount))
    .addOption(new Option("--archive-older-than <age>", "move unreferenced images older than this, but not old enough to delete, to archive/").argParser(parseAge))
    .addOption(new Option("--blob-grace <age>", "delete blobs no image needs only once older than this").default(parseAge("24h"), "24h").argParser(parseAge))
    .option("--yes", "really delete (without it: a dry run that prints what would go and the bytes freed)")
    .description("Delete bucket images (with their metadata) that no version tag or env pointer names; a dry run unless --yes")
    .addHelpText(
      "after",
      examples("s3dock cleanup remote myapp", "s3dock cleanup remote myapp --older-than 30d --keep 10 --yes", "s3dock cleanup remote myapp --older-than 180d --archive-older-than 30d --yes") +
        `
An image is a candidate when no tag or env pointer names it, it is not among the newest --keep, and
it was last pushed (its metadata's LastModified, by the bucket's clock) longer ago than
--older-than: it is deleted. With --archive-older-than, unreferenced images between the two ages are
moved to archive/ instead (archive/{app}/{YYYYMM}/…-archived-on-{stamp}-{unique}): out of every list,
still restorable by hand. Each candidate is first marked as being deleted (a conditional write on its
metadata, refused if it changed since the listing), then references are read again, and only then is
it deleted; a promote or tag racing with it either keeps the image or is taken back. Candidates go in
batches; each removal is recorded in the audit trail as it happens. Unfinished multipart uploads,
staging objects and push claims that crashed pushes left (older than an hour, by the bucket's
clock) are removed too. Then the layers format's blobs (shared by every app in the bucket) that no
image's metadata, stored or archived, and no push under way needs, and that are older than
--blob-grace, are deleted.
`,
    )
    .action(
      action("cleanup remote", async (runtime, app: string, options: { olderThan: number; keep: number; archiveOlderThan?: number; blobGrace: number; yes?: boolean }) => {
        if (options.archiveOlderThan !== undefined && options.archiveOlderThan >= options.olderThan) {
          throw new UsageError("--archive-older-than must be shorter than --older-than (images older than --older-than are deleted)");
        }
        const result = await new Cleaner(runtime().services()).remote(app, {
          olderThanMs: options.olderThan,
          keep: options.keep,
          archiveOlderThanMs: options.archiveOlderThan,
          blobGraceMs: options.blobGrace,
          yes: options.yes === true,
        });
        const listed = result.dry_run ? result.candidates : result.deleted;
        const verb = (action: string) => (result.dry_run ? `would ${action}` : action === "delete" ? "deleted" : "archived");
        const text = listed.map((c) => `${verb(c.action)} ${c.image} (${formatBytes(c.size)})`);
        for (const upload of result.stale_uploads) text.push(`${result.dry_run ? "would abort" : "aborted"} unfinished upload ${upload.key}`);
        for (const key of result.leftovers) text.push(`${result.dry_run ? "would delete" : "deleted"} ${key} (left by a push that died)`);
        const { blobs } = result;
        if (blobs.candidates > 0) text.push(`${result.dry_run ? "would delete" : "deleted"} ${result.dry_run ? blobs.candidates : blobs.deleted} blobs no image needs (${formatBytes(blobs.bytes_freed)})`);
        const total = result.bytes_freed + blobs.bytes_freed;
        text.push(`${result.dry_run ? "would free" : "freed"} ${formatBytes(total)}${result.dry_run && (listed.length > 0 || blobs.candidates > 0) ? " (dry run: pass --yes to delete)" : ""}`);
        return { data: result, text };
      }),
    );
}
