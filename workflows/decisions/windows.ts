// Maintenance windows: a cron-like start in an IANA time zone and a duration. Pure: no I/O, no clock (the
// caller passes the instant), so the rollout workflows and the CLI compute the same answers.
//
// Start: 5 fields `minute hour day-of-month month day-of-week`, or 6 with seconds first (windows of
// seconds, for tests and demos). Each field: `*`, `n`, `a-b`, lists `a,b`, steps `*/n`, `a-b/n`, `a/n`;
// months may be JAN–DEC, weekdays SUN–SAT (0 or 7 is Sunday). As in Vixie cron, when both day-of-month and
// day-of-week are restricted, a day matches if either does.
//
// Wall clock → instant, around daylight-saving changes (as JavaScript's Temporal "compatible"
// disambiguation): a start in the skipped hour begins that many minutes later (02:30 on a spring-forward
// night at 02:00 → 03:30), a start in the repeated hour uses its first occurrence. The duration is elapsed
// time, so a 4 h window across a DST change lasts 4 real hours.

export interface MaintenanceWindow {
  /** Cron-like start, in the window's time zone. */
  start: string;
  /** Elapsed milliseconds the window stays open. */
  durationMs: number;
  /** IANA time zone, e.g. Europe/Paris. */
  timezone: string;
}

export interface CronSpec {
  seconds: number[];
  minutes: number[];
  hours: number[];
  days: number[];
  months: number[];
  weekdays: number[];
  domRestricted: boolean;
  dowRestricted: boolean;
}

export class CronError extends Error {
  override name = 'CronError';
}

const MONTHS = ['JAN', 'FEB', 'MAR', 'APR', 'MAY', 'JUN', 'JUL', 'AUG', 'SEP', 'OCT', 'NOV', 'DEC'];
const WEEKDAYS = ['SUN', 'MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT'];

interface FieldDef {
  name: string;
  min: number;
  max: number;
  names?: string[];
  /** Offset of names[0] (1 for months, 0 for weekdays). */
  nameBase?: number;
}

const FIELDS: Record<'second' | 'minute' | 'hour' | 'day' | 'month' | 'weekday', FieldDef> = {
  second: { name: 'second', min: 0, max: 59 },
  minute: { name: 'minute', min: 0, max: 59 },
  hour: { name: 'hour', min: 0, max: 23 },
  day: { name: 'day-of-month', min: 1, max: 31 },
  month: { name: 'month', min: 1, max: 12, names: MONTHS, nameBase: 1 },
  weekday: { name: 'day-of-week', min: 0, max: 7, names: WEEKDAYS, nameBase: 0 },
};

function parseValue(text: string, f: FieldDef): number {
  const upper = text.toUpperCase();
  if (f.names) {
    const i = f.names.indexOf(upper);
    if (i >= 0) return i + (f.nameBase ?? 0);
  }
  if (!/^\d+$/.test(text)) throw new CronError(`${f.name}: ${JSON.stringify(text)} is not a number`);
  const n = Number(text);
  if (n < f.min || n > f.max) throw new CronError(`${f.name}: ${n} is out of range ${f.min}-${f.max}`);
  return n;
}

/** One cron field → the sorted values it allows; `restricted` is false for `*` (and `*` with step 1). */
export function parseField(text: string, f: FieldDef): { values: number[]; restricted: boolean } {
  if (text === '') throw new CronError(`${f.name}: empty field`);
  const out = new Set<number>();
  let restricted = false;
  for (const part of text.split(',')) {
    if (part === '') throw new CronError(`${f.name}: empty list item in ${JSON.stringify(text)}`);
    const [range, stepText, extra] = part.split('/');
    if (extra !== undefined) throw new CronError(`${f.name}: ${JSON.stringify(part)} has two steps`);
    let step = 1;
    if (stepText !== undefined) {
      if (!/^\d+$/.test(stepText) || Number(stepText) < 1)
        throw new CronError(`${f.name}: step ${JSON.stringify(stepText)} must be a positive integer`);
      step = Number(stepText);
    }
    let lo: number;
    let hi: number;
    if (range === '*') {
      lo = f.min;
      hi = f.max === 7 ? 6 : f.max;
      if (step !== 1) restricted = true;
    } else {
      restricted = true;
      const dash = range.indexOf('-');
      if (dash > 0) {
        lo = parseValue(range.slice(0, dash), f);
        hi = parseValue(range.slice(dash + 1), f);
        if (hi < lo) throw new CronError(`${f.name}: range ${JSON.stringify(range)} runs backwards`);
      } else {
        lo = parseValue(range, f);
        hi = stepText !== undefined ? (f.max === 7 ? 6 : f.max) : lo;
      }
    }
    for (let v = lo; v <= hi; v += step) out.add(f.max === 7 && v === 7 ? 0 : v);
  }
  return { values: [...out].sort((a, b) => a - b), restricted };
}

/** Parses a 5- or 6-field cron expression; throws CronError naming the field. */
export function parseCron(text: string): CronSpec {
  const fields = text.trim().split(/\s+/);
  if (fields.length !== 5 && fields.length !== 6) {
    throw new CronError(
      `expected 5 fields (minute hour day-of-month month day-of-week) or 6 (second first), got ${fields.length}`,
    );
  }
  const [sec, min, hour, dom, mon, dow] = fields.length === 6 ? fields : ['0', ...fields];
  const day = parseField(dom!, FIELDS.day);
  const weekday = parseField(dow!, FIELDS.weekday);
  return {
    seconds: parseField(sec!, FIELDS.second).values,
    minutes: parseField(min!, FIELDS.minute).values,
    hours: parseField(hour!, FIELDS.hour).values,
    days: day.values,
    months: parseField(mon!, FIELDS.month).values,
    weekdays: weekday.values,
    domRestricted: day.restricted,
    dowRestricted: weekday.restricted,
  };
}

// ---------------------------------------------------------------------------------------------------------
// Time zones

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
      era: 'short',
    });
    formatters.set(timeZone, f);
  }
  return f;
}

/** Whether the runtime knows the IANA zone (Intl.DateTimeFormat throws RangeError for unknown ones). */
export function isKnownTimeZone(timeZone: string): boolean {
  if (!timeZone) return false;
  try {
    formatter(timeZone);
    return true;
  } catch {
    return false;
  }
}

interface Wall {
  y: number;
  mo: number;
  d: number;
  h: number;
  mi: number;
  s: number;
}

/** The wall clock of an instant in a zone. */
export function wallClock(ms: number, timeZone: string): Wall {
  const parts = formatter(timeZone).formatToParts(new Date(ms));
  const get = (t: Intl.DateTimeFormatPartTypes) => Number(parts.find((p) => p.type === t)?.value);
  const era = parts.find((p) => p.type === 'era')?.value;
  const year = get('year');
  return {
    y: era === 'BC' || era === 'B' ? 1 - year : year,
    mo: get('month'),
    d: get('day'),
    h: get('hour') % 24,
    mi: get('minute'),
    s: get('second'),
  };
}

const naive = (w: Wall) => Date.UTC(w.y, w.mo - 1, w.d, w.h, w.mi, w.s);

/** Offset of the zone at an instant, ms (wall − UTC). */
export function zoneOffsetMs(ms: number, timeZone: string): number {
  if (timeZone === 'UTC' || timeZone === 'Etc/UTC') return 0;
  const whole = Math.floor(ms / 1000) * 1000;
  return naive(wallClock(whole, timeZone)) - whole;
}

const DAY_MS = 86_400_000;

/** The instant of a wall-clock time in a zone, with the DST rules of this file's header. */
export function instantOf(w: Wall, timeZone: string): number {
  const guess = naive(w);
  const before = zoneOffsetMs(guess - DAY_MS, timeZone);
  const after = zoneOffsetMs(guess + DAY_MS, timeZone);
  const candidates = [guess - before, guess - after].filter((c) => naive(wallClock(c, timeZone)) === guess);
  if (candidates.length) return Math.min(...candidates);
  // In a gap: the wall time does not exist; shift it forward by the gap (use the offset before it).
  return guess - before;
}

// ---------------------------------------------------------------------------------------------------------
// Window starts

function dayMatches(spec: CronSpec, y: number, mo: number, d: number): boolean {
  if (!spec.months.includes(mo)) return false;
  const dow = new Date(Date.UTC(y, mo - 1, d)).getUTCDay();
  const domOk = spec.days.includes(d);
  const dowOk = spec.weekdays.includes(dow);
  if (spec.domRestricted && spec.dowRestricted) return domOk || dowOk;
  return domOk && dowOk;
}

/** How far to search for the next or previous start (covers Feb 29 and weekday combinations). */
const HORIZON_DAYS = 366 * 8;

/** The smallest matching wall time (as naive UTC ms) at or after the naive wall time `n`. */
function nextNaive(spec: CronSpec, n: number): number | undefined {
  const from = new Date(Math.ceil(n / 1000) * 1000);
  const day0 = Date.UTC(from.getUTCFullYear(), from.getUTCMonth(), from.getUTCDate());
  const fh = from.getUTCHours();
  const fmi = from.getUTCMinutes();
  const fs = from.getUTCSeconds();
  for (let i = 0; i < HORIZON_DAYS; i++) {
    const date = new Date(day0 + i * DAY_MS);
    const y = date.getUTCFullYear();
    const mo = date.getUTCMonth() + 1;
    const d = date.getUTCDate();
    if (!dayMatches(spec, y, mo, d)) continue;
    for (const h of spec.hours) {
      if (i === 0 && h < fh) continue;
      const sameH = i === 0 && h === fh;
      for (const mi of spec.minutes) {
        if (sameH && mi < fmi) continue;
        const sameM = sameH && mi === fmi;
        const s = sameM ? spec.seconds.find((x) => x >= fs) : spec.seconds[0];
        if (s !== undefined) return Date.UTC(y, mo - 1, d, h, mi, s);
      }
    }
  }
  return undefined;
}

/** The largest matching wall time (as naive UTC ms) at or before the naive wall time `n`. */
function previousNaive(spec: CronSpec, n: number): number | undefined {
  const at = new Date(Math.floor(n / 1000) * 1000);
  const day0 = Date.UTC(at.getUTCFullYear(), at.getUTCMonth(), at.getUTCDate());
  const ah = at.getUTCHours();
  const ami = at.getUTCMinutes();
  const as = at.getUTCSeconds();
  const hours = [...spec.hours].reverse();
  const minutes = [...spec.minutes].reverse();
  const seconds = [...spec.seconds].reverse();
  for (let i = 0; i < HORIZON_DAYS; i++) {
    const date = new Date(day0 - i * DAY_MS);
    const y = date.getUTCFullYear();
    const mo = date.getUTCMonth() + 1;
    const d = date.getUTCDate();
    if (!dayMatches(spec, y, mo, d)) continue;
    for (const h of hours) {
      if (i === 0 && h > ah) continue;
      const sameH = i === 0 && h === ah;
      for (const mi of minutes) {
        if (sameH && mi > ami) continue;
        const sameM = sameH && mi === ami;
        const s = sameM ? seconds.find((x) => x <= as) : seconds[0];
        if (s !== undefined) return Date.UTC(y, mo - 1, d, h, mi, s);
      }
    }
  }
  return undefined;
}

const fromNaive = (n: number): Wall => {
  const d = new Date(n);
  return {
    y: d.getUTCFullYear(),
    mo: d.getUTCMonth() + 1,
    d: d.getUTCDate(),
    h: d.getUTCHours(),
    mi: d.getUTCMinutes(),
    s: d.getUTCSeconds(),
  };
};

/** The zone's offsets around an instant (at most a few distinct values: one DST change either side). */
function offsetsAround(ms: number, timeZone: string): number[] {
  const span = 3 * 3_600_000;
  return [...new Set([-span, 0, span].map((d) => zoneOffsetMs(ms + d, timeZone)))];
}

// Wall times map to instants monotonically (non-decreasing) under the rules above. For each offset the
// zone has around the bound, the matching wall time nearest the bound under that offset is converted
// exactly and stepped past the bound if a DST change moved it; the best of those is the answer.

/** The first start at or after `fromMs`, or undefined if none within the horizon. */
export function nextStart(spec: CronSpec, timeZone: string, fromMs: number): number | undefined {
  let best: number | undefined;
  for (const o of offsetsAround(fromMs, timeZone)) {
    let w = nextNaive(spec, fromMs + o);
    for (let guard = 0; w !== undefined && guard < 100; guard++) {
      const t = instantOf(fromNaive(w), timeZone);
      if (t >= fromMs) {
        if (best === undefined || t < best) best = t;
        break;
      }
      w = nextNaive(spec, w + 1000);
    }
  }
  return best;
}

/** The last start at or before `atMs`, or undefined if none within the horizon. */
export function previousStart(spec: CronSpec, timeZone: string, atMs: number): number | undefined {
  let best: number | undefined;
  for (const o of offsetsAround(atMs, timeZone)) {
    let w = previousNaive(spec, atMs + o);
    for (let guard = 0; w !== undefined && guard < 100; guard++) {
      const t = instantOf(fromNaive(w), timeZone);
      if (t <= atMs) {
        if (best === undefined || t > best) best = t;
        break;
      }
      w = previousNaive(spec, w - 1000);
    }
  }
  return best;
}

// ---------------------------------------------------------------------------------------------------------
// Window state

export interface WindowState {
  /** True when no windows are defined (always open) or one is open now. */
  open: boolean;
  /** When the open window closes (undefined when there are no windows). */
  closesAt?: number;
  /** The next time a window opens after now (when closed) or after closesAt (when open). */
  nextOpensAt?: number;
}

const specCache = new Map<string, CronSpec>();
function specOf(start: string): CronSpec {
  let s = specCache.get(start);
  if (!s) {
    s = parseCron(start);
    specCache.set(start, s);
  }
  return s;
}

function firstOpening(windows: MaintenanceWindow[], fromMs: number): number | undefined {
  let best: number | undefined;
  for (const w of windows) {
    const t = nextStart(specOf(w.start), w.timezone, fromMs);
    if (t !== undefined && (best === undefined || t < best)) best = t;
  }
  return best;
}

/** Whether a window is open at `nowMs`, when it closes and when the next one opens. */
export function windowState(windows: MaintenanceWindow[], nowMs: number): WindowState {
  if (windows.length === 0) return { open: true };
  let closesAt: number | undefined;
  for (const w of windows) {
    const p = previousStart(specOf(w.start), w.timezone, nowMs);
    if (p !== undefined && nowMs < p + w.durationMs) closesAt = Math.max(closesAt ?? 0, p + w.durationMs);
  }
  if (closesAt === undefined) {
    const next = firstOpening(windows, nowMs);
    return { open: false, ...(next !== undefined ? { nextOpensAt: next } : {}) };
  }
  // Windows that start before this one closes extend it.
  for (let guard = 0; guard < 1000; guard++) {
    let extended = false;
    for (const w of windows) {
      const s = nextStart(specOf(w.start), w.timezone, nowMs + 1);
      if (s !== undefined && s <= closesAt && s + w.durationMs > closesAt) {
        closesAt = s + w.durationMs;
        extended = true;
      }
    }
    if (!extended) break;
  }
  const next = firstOpening(windows, closesAt + 1);
  return { open: true, closesAt, ...(next !== undefined ? { nextOpensAt: next } : {}) };
}

/** Milliseconds until the window state next changes (open → closed or closed → open), if ever. */
export function msUntilWindowChange(windows: MaintenanceWindow[], nowMs: number): number | undefined {
  const s = windowState(windows, nowMs);
  const at = s.open ? s.closesAt : s.nextOpensAt;
  return at === undefined ? undefined : Math.max(1, at - nowMs);
}

// ---------------------------------------------------------------------------------------------------------
// Durations

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: DAY_MS };

/** `90s`, `4h`, `1h30m`, `500ms`, `2d` → milliseconds; undefined when malformed. */
export function parseDuration(text: string): number | undefined {
  const t = text.trim();
  if (!/^(\d+(ms|s|m|h|d))+$/.test(t)) return undefined;
  let total = 0;
  for (const m of t.matchAll(/(\d+)(ms|s|m|h|d)/g)) total += Number(m[1]) * UNIT_MS[m[2]!]!;
  return total;
}
