/** Time formats of the bucket layout. Git times are UTC; folder months and audit stamps are local, as the Go tool writes them. */

const pad = (value: number, width = 2): string => String(value).padStart(width, "0");

/** `YYYYMMDD-HHMM` in UTC: the commit time in an image tag. */
export function formatGitTime(date: Date): string {
  return `${date.getUTCFullYear()}${pad(date.getUTCMonth() + 1)}${pad(date.getUTCDate())}-${pad(date.getUTCHours())}${pad(date.getUTCMinutes())}`;
}

/** The git time digits read as UTC, seconds 0: the mtime every entry of a stored image tar gets. */
export function gitTimeToDate(gitTime: string): Date {
  const m = /^(\d{4})(\d{2})(\d{2})-(\d{2})(\d{2})$/.exec(gitTime);
  if (!m) throw new Error(`not a git time: ${gitTime}`);
  return new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5])));
}

/** `YYYYMM` in local time: the month folder of a push. */
export function formatLocalMonth(date: Date): string {
  return `${date.getFullYear()}${pad(date.getMonth() + 1)}`;
}

/** `YYYYMMDD-HHMM` in local time: audit and archive stamps. */
export function formatLocalStamp(date: Date): string {
  return `${formatLocalMonth(date)}${pad(date.getDate())}-${pad(date.getHours())}${pad(date.getMinutes())}`;
}

/** RFC 3339 in local time with the zone offset (`Z` in UTC) and trailing fractional zeros dropped, as Go's time JSON. */
export function formatGoTime(date: Date): string {
  const offsetMinutes = -date.getTimezoneOffset();
  const fraction = date.getMilliseconds() === 0 ? "" : `.${pad(date.getMilliseconds(), 3).replace(/0+$/, "")}`;
  let zone = "Z";
  if (offsetMinutes !== 0) {
    const sign = offsetMinutes > 0 ? "+" : "-";
    const abs = Math.abs(offsetMinutes);
    zone = `${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
  }
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}` +
    `T${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}${fraction}${zone}`
  );
}

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})$/;

function daysInMonth(year: number, month: number): number {
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  return [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1] ?? 0;
}

/** What Go's time decoder accepts: RFC 3339 with up to nine fractional digits. */
export function isRfc3339(value: string): boolean {
  const match = RFC3339.exec(value);
  if (!match) return false;
  // Date.parse takes 24:00 and rolls February 30 over into March; Go's decoder refuses both.
  const [year, month, day, hour] = match.slice(1, 5).map(Number) as [number, number, number, number];
  if (day < 1 || day > daysInMonth(year, month) || hour > 23) return false;
  return !Number.isNaN(parseGoTime(value));
}

/** Milliseconds since the epoch of an RFC 3339 time (Go writes up to nine fractional digits; Date.parse takes three). */
export function parseGoTime(value: string): number {
  return Date.parse(value.replace(/(\.\d{3})\d+/, "$1"));
}
