import { execFileSync } from "node:child_process";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";

// The process's zone is fixed once Date is used, so each zone runs in its own Node process.
const TIME_MODULE = resolve(import.meta.dirname, "../../src/domain/time.ts");
const INSTANTS = [0, 1_753_132_803_512, 1_753_132_803_500, 1_711_846_800_000, 1_704_067_199_999];

function formatIn(tz: string): { text: string; rfc: boolean; month: string; stamp: string }[] {
  const script = `
    const t = await import(${JSON.stringify(TIME_MODULE)});
    const out = ${JSON.stringify(INSTANTS)}.map((ms) => {
      const d = new Date(ms);
      const text = t.formatGoTime(d);
      return { text, rfc: t.isRfc3339(text), month: t.formatLocalMonth(d), stamp: t.formatLocalStamp(d) };
    });
    console.log(JSON.stringify(out));`;
  const stdout = execFileSync(process.execPath, ["--input-type=module", "-e", script], { env: { ...process.env, TZ: tz } });
  return JSON.parse(stdout.toString()) as { text: string; rfc: boolean; month: string; stamp: string }[];
}

describe("formatGoTime in other time zones", () => {
  it.each([
    ["UTC", /Z$/],
    ["Asia/Kolkata", /\+05:30$/],
    ["America/St_Johns", /-0[23]:30$/],
    ["Pacific/Chatham", /\+1[23]:45$/],
    ["America/Los_Angeles", /-0[78]:00$/],
  ])("%s: RFC 3339 with the zone's offset, the same instant", (tz, offset) => {
    const results = formatIn(tz);
    results.forEach((result, i) => {
      expect(result.rfc).toBe(true);
      expect(result.text).toMatch(offset);
      expect(Date.parse(result.text)).toBe(INSTANTS[i]);
      expect(result.stamp.startsWith(result.month)).toBe(true);
      // The local stamp is the wall-clock time the offset describes.
      expect(result.text.replace(/[-:T]/g, "").slice(0, 12)).toBe(result.stamp.replace("-", ""));
    });
  });

  it("the month folder follows the local calendar", () => {
    // 2023-12-31T23:59:59.999Z is already January in Kolkata, still December in Los Angeles.
    expect(formatIn("Asia/Kolkata")[4]!.month).toBe("202401");
    expect(formatIn("America/Los_Angeles")[4]!.month).toBe("202312");
    expect(formatIn("UTC")[4]!.text).toBe("2023-12-31T23:59:59.999Z");
  });
});
