/**
 * A host whose clock is wrong: the CLI runs under faketime (libfaketime shifts every clock call of
 * the process, as a misconfigured host would). Ages and timestamps come from the bucket's clock
 * (objects' LastModified, answers' Date header), so a host 100 days ahead deletes nothing fresh,
 * one 2 hours ahead aborts no upload in flight, and audit events land in the server's month.
 */
import { execFileSync } from "node:child_process";
import { AbortMultipartUploadCommand, CreateMultipartUploadCommand, ListMultipartUploadsCommand } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { auditEvents, cliEnv, createBucket, deleteBucket, getText, listKeys, runJson, runS3dock, s3, storeSyntheticImage } from "./harness.js";

const faketimeUsable = (() => {
  try {
    execFileSync("faketime", ["-f", "+1d", "true"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();

const APP = `skew-${Math.random().toString(16).slice(2, 8)}`;
let bucket: string;
let env: Record<string, string>;
const ahead = (offset: string) => ["faketime", "-f", offset];
const monthOf = (date: Date) => `${date.getFullYear()}${String(date.getMonth() + 1).padStart(2, "0")}`;

beforeAll(async () => {
  bucket = await createBucket("s3dock-skew");
  env = cliEnv(bucket);
});

afterAll(async () => {
  if (bucket) await deleteBucket(bucket);
});

describe.runIf(faketimeUsable)("a host whose clock is off", () => {
  it("100 days ahead: cleanup remote --older-than 90d deletes none of today's images", async () => {
    const images = await Promise.all([1, 2, 3].map((i) => storeSyntheticImage(bucket, APP, i, "202501", new Date().toISOString())));
    const result = await runJson(["cleanup", "remote", APP, "--older-than", "90d", "--keep", "0", "--yes"], { env, wrapper: ahead("+100d") });
    expect(result.code, result.stderr).toBe(0);
    expect(result.doc.data.deleted).toEqual([]);
    for (const image of images) expect(result.doc.data.skipped).toContainEqual({ image: image.name, reason: "too young" });
    expect((await listKeys(bucket, `images/${APP}/`)).length).toBe(6);
    // The control: by the server's clock they are indeed young, and old enough for --older-than 0s.
    const control = await runJson(["cleanup", "remote", APP, "--older-than", "0s", "--keep", "0"], { env });
    expect(control.doc.data.candidates).toHaveLength(3);
  });

  it("2 hours ahead: cleanup remote leaves a multipart upload started just now (a push in flight) alone", async () => {
    const key = `images/${APP}/202501/${APP}-20250101-0000-abcdef0.tar.gz`;
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
    try {
      const result = await runJson(["cleanup", "remote", APP, "--keep", "100", "--yes"], { env, wrapper: ahead("+2h") });
      expect(result.code, result.stderr).toBe(0);
      expect(result.doc.data.stale_uploads).toEqual([]);
      const pending = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: key }));
      expect(pending.Uploads?.map((upload) => upload.UploadId)).toEqual([UploadId]);
    } finally {
      await s3.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId })).catch(() => undefined);
    }
  });

  it("40 days ahead: audit events and documents carry the server's time and month", async () => {
    const image = await storeSyntheticImage(bucket, APP, 10);
    const before = Date.now();
    for (const args of [["tag", image.name, "v1.0.0"], ["promote", image.name, "production"]]) {
      const result = await runS3dock(args, { env, wrapper: ahead("+40d") });
      expect(result.code, result.stderr).toBe(0);
    }
    const events = (await auditEvents(bucket, APP)).filter((event) => event.event_type === "tag" || event.event_type === "promotion");
    expect(events).toHaveLength(2);
    for (const event of events) {
      expect(event.key).toMatch(new RegExp(`^audit/${APP}/${monthOf(new Date())}/`));
      expect(Math.abs(Date.parse(event.timestamp) - before)).toBeLessThan(10 * 60_000);
    }
    const pointer = JSON.parse(await getText(bucket, `pointers/${APP}/production.json`));
    expect(Math.abs(Date.parse(pointer.promoted_at) - before)).toBeLessThan(10 * 60_000);
  });
});
