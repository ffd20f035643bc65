import { describe, expect, it } from "vitest";
import { formatGitTime, formatGoTime, formatLocalMonth, formatLocalStamp, gitTimeToDate, isRfc3339 } from "../../src/domain/time.js";

const pad = (n: number) => String(n).padStart(2, "0");

describe("git time", () => {
  it("formats in UTC", () => {
    expect(formatGitTime(new Date("2025-07-21T21:18:59.999Z"))).toBe("20250721-2118");
    expect(formatGitTime(new Date("2025-01-01T00:00:00+05:00"))).toBe("20241231-1900");
  });

  it("reads the digits as UTC with seconds 0", () => {
    expect(gitTimeToDate("20250721-2118").toISOString()).toBe("2025-07-21T21:18:00.000Z");
    expect(() => gitTimeToDate("2025-07-21")).toThrow(/not a git time/);
  });

  it("round-trips", () => {
    for (const value of ["20000101-0000", "20250721-2118", "20991231-2359", "20240229-1230"]) {
      expect(formatGitTime(gitTimeToDate(value))).toBe(value);
    }
  });
});

describe("local month and stamp", () => {
  it("use the local calendar", () => {
    const date = new Date(2025, 6, 3, 4, 5, 6); // local time
    expect(formatLocalMonth(date)).toBe("202507");
    expect(formatLocalStamp(date)).toBe("20250703-0405");
  });

  it("agree with Date's local getters at arbitrary instants", () => {
    for (const ms of [0, 1_700_000_000_000, 1_753_132_800_000, 1_000_000_000_123]) {
      const d = new Date(ms);
      expect(formatLocalStamp(d)).toBe(`${d.getFullYear()}${pad(d.getMonth() + 1)}${pad(d.getDate())}-${pad(d.getHours())}${pad(d.getMinutes())}`);
      expect(formatLocalStamp(d).startsWith(formatLocalMonth(d))).toBe(true);
    }
  });
});

describe("formatGoTime", () => {
  const instants = [0, 1_753_132_803_512, 1_753_132_803_500, 1_753_132_803_000, 1_753_132_803_010, 951_782_400_001, 1_711_846_800_000];

  it.each(instants)("%d: is RFC 3339 and parses back to the same instant", (ms) => {
    const text = formatGoTime(new Date(ms));
    expect(isRfc3339(text)).toBe(true);
    expect(Date.parse(text)).toBe(ms);
  });

  it("drops trailing fractional zeros, and the fraction when it is zero", () => {
    expect(formatGoTime(new Date(1_753_132_803_500))).toMatch(/:\d{2}\.5(Z|[+-]\d{2}:\d{2})$/);
    expect(formatGoTime(new Date(1_753_132_803_010))).toMatch(/:\d{2}\.01(Z|[+-]\d{2}:\d{2})$/);
    expect(formatGoTime(new Date(1_753_132_803_000))).toMatch(/:\d{2}(Z|[+-]\d{2}:\d{2})$/);
  });

  it("writes the local offset, Z only when it is zero", () => {
    const date = new Date(1_753_132_803_512);
    const offset = -date.getTimezoneOffset();
    const text = formatGoTime(date);
    if (offset === 0) expect(text.endsWith("Z")).toBe(true);
    else expect(text).toMatch(/[+-]\d{2}:\d{2}$/);
    expect(text.startsWith(`${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}`)).toBe(true);
  });
});

describe("isRfc3339", () => {
  it.each([
    "2025-07-21T21:20:03.512340117+02:00",
    "2025-07-22T09:01:44.2+02:00",
    "2025-07-22T09:01:44Z",
    "2025-07-22T09:01:44.120003-07:00",
    "2025-07-22T09:01:44.000000001Z",
  ])("accepts Go's %s", (value) => expect(isRfc3339(value)).toBe(true));

  it.each([
    "",
    "yesterday",
    "2025-07-22",
    "2025-07-22 09:01:44Z",
    "2025-07-22T09:01:44",
    "2025-07-22T09:01:44.Z",
    "2025-07-22T09:01:44.1234567890Z",
    "2025-13-22T09:01:44Z",
    "2025-07-32T09:01:44Z",
    "2025-02-30T09:01:44Z",
    "2025-07-22T25:01:44Z",
    "2025-07-22T24:00:00Z",
    "2025-07-22T09:60:44Z",
    "2025-07-22T09:01:44+0200",
    "2025-07-22T09:01:44+25:00",
    "1753132803",
  ])("rejects %j", (value) => expect(isRfc3339(value)).toBe(false));
});
