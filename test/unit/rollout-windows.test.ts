// Maintenance windows: cron parsing, starts in IANA time zones across DST changes, open/closed state.
import {
  CronError,
  instantOf,
  isKnownTimeZone,
  msUntilWindowChange,
  nextStart,
  parseCron,
  parseDuration,
  previousStart,
  wallClock,
  windowState,
  type MaintenanceWindow,
} from '../../workflows/decisions/windows';

const utc = (y: number, mo: number, d: number, h = 0, mi = 0, s = 0) => Date.UTC(y, mo - 1, d, h, mi, s);
const iso = (t: number | undefined) => (t === undefined ? undefined : new Date(t).toISOString());
const H = 3_600_000;

describe('parseCron', () => {
  test('5 fields: seconds default to 0; lists, ranges, steps and names', () => {
    const c = parseCron('*/15 1-3,22 * JAN-MAR mon-fri');
    expect(c.seconds).toEqual([0]);
    expect(c.minutes).toEqual([0, 15, 30, 45]);
    expect(c.hours).toEqual([1, 2, 3, 22]);
    expect(c.months).toEqual([1, 2, 3]);
    expect(c.weekdays).toEqual([1, 2, 3, 4, 5]);
    expect(c.domRestricted).toBe(false);
    expect(c.dowRestricted).toBe(true);
  });

  test('6 fields put seconds first; 7 is Sunday; a/n steps to the end', () => {
    const c = parseCron('5/20 0 12 1 * 7');
    expect(c.seconds).toEqual([5, 25, 45]);
    expect(c.weekdays).toEqual([0]);
  });

  test.each([
    ['* * *', /expected 5 fields .* got 3/],
    ['60 * * * *', /^minute: 60 is out of range 0-59$/],
    ['0 24 * * *', /^hour: 24 is out of range 0-23$/],
    ['0 0 0 * *', /^day-of-month: 0 is out of range 1-31$/],
    ['0 0 * 13 *', /^month: 13 is out of range 1-12$/],
    ['0 0 * * FUNDAY', /^day-of-week: "FUNDAY" is not a number$/],
    ['0 5-1 * * *', /^hour: range "5-1" runs backwards$/],
    ['*/0 * * * *', /^minute: step "0" must be a positive integer$/],
    ['0,,1 * * * *', /^minute: empty list item/],
  ])('%s is refused naming the field', (text, msg) => {
    expect(() => parseCron(text)).toThrow(CronError);
    expect(() => parseCron(text)).toThrow(msg);
  });
});

describe('time zones', () => {
  test('known and unknown zones (Intl.DateTimeFormat)', () => {
    expect(isKnownTimeZone('Europe/Paris')).toBe(true);
    expect(isKnownTimeZone('America/Argentina/Buenos_Aires')).toBe(true);
    expect(isKnownTimeZone('UTC')).toBe(true);
    expect(isKnownTimeZone('Mars/Olympus')).toBe(false);
    expect(isKnownTimeZone('')).toBe(false);
  });

  test('wall clock and back, away from DST changes', () => {
    const t = utc(2026, 7, 1, 10, 20, 30);
    expect(wallClock(t, 'Asia/Kolkata')).toEqual({ y: 2026, mo: 7, d: 1, h: 15, mi: 50, s: 30 });
    expect(instantOf({ y: 2026, mo: 7, d: 1, h: 15, mi: 50, s: 30 }, 'Asia/Kolkata')).toBe(t);
  });
});

describe('window starts across DST changes', () => {
  const at0230 = parseCron('30 2 * * *');

  test('Europe/Paris, spring forward (02:00 → 03:00): 02:30 does not exist, the start moves to 03:30', () => {
    const t = nextStart(at0230, 'Europe/Paris', utc(2026, 3, 28, 12));
    expect(iso(t)).toBe('2026-03-29T01:30:00.000Z'); // 03:30 CEST
    expect(wallClock(t!, 'Europe/Paris')).toMatchObject({ h: 3, mi: 30 });
    // The day before and after keep 02:30 local.
    expect(iso(nextStart(at0230, 'Europe/Paris', utc(2026, 3, 27, 12)))).toBe('2026-03-28T01:30:00.000Z'); // CET
    expect(iso(nextStart(at0230, 'Europe/Paris', utc(2026, 3, 29, 12)))).toBe('2026-03-30T00:30:00.000Z'); // CEST
  });

  test('Europe/Paris, fall back (03:00 → 02:00): 02:30 happens twice, the first counts, once', () => {
    expect(iso(nextStart(at0230, 'Europe/Paris', utc(2026, 10, 24, 12)))).toBe('2026-10-25T00:30:00.000Z');
    // After the first 02:30 (CEST), the second one (CET, 01:30Z) is not a start.
    expect(iso(nextStart(at0230, 'Europe/Paris', utc(2026, 10, 25, 0, 31)))).toBe('2026-10-26T01:30:00.000Z');
    expect(iso(previousStart(at0230, 'Europe/Paris', utc(2026, 10, 25, 1, 45)))).toBe('2026-10-25T00:30:00.000Z');
  });

  test('America/New_York, spring forward: a 3 h window from 01:00 lasts 3 elapsed hours (until 05:00 EDT)', () => {
    const w: MaintenanceWindow[] = [{ start: '0 1 * * *', durationMs: 3 * H, timezone: 'America/New_York' }];
    // 2026-03-08: 01:00 EST = 06:00Z; clocks jump at 02:00 EST (07:00Z).
    expect(windowState(w, utc(2026, 3, 8, 5, 59))).toMatchObject({ open: false, nextOpensAt: utc(2026, 3, 8, 6) });
    const open = windowState(w, utc(2026, 3, 8, 6));
    expect(open).toMatchObject({ open: true, closesAt: utc(2026, 3, 8, 9) });
    expect(wallClock(open.closesAt!, 'America/New_York')).toMatchObject({ h: 5, mi: 0 }); // EDT
    expect(windowState(w, utc(2026, 3, 8, 8, 59, 59)).open).toBe(true);
    expect(windowState(w, utc(2026, 3, 8, 9))).toMatchObject({ open: false, nextOpensAt: utc(2026, 3, 9, 5) }); // 01:00 EDT
  });

  test('Australia/Sydney, DST ends in April (03:00 → 02:00): the first 02:30 (AEDT) counts', () => {
    expect(iso(nextStart(at0230, 'Australia/Sydney', utc(2026, 4, 4, 0)))).toBe('2026-04-04T15:30:00.000Z');
    expect(iso(nextStart(at0230, 'Australia/Sydney', utc(2026, 4, 4, 15, 31)))).toBe('2026-04-05T16:30:00.000Z');
  });

  test('Australia/Lord_Howe moves by 30 minutes: 02:10 in its gap starts at 02:40', () => {
    // DST starts 2026-10-04 at 02:00 local (+10:30 → +11:00).
    const t = nextStart(parseCron('10 2 * * *'), 'Australia/Lord_Howe', utc(2026, 10, 3, 12));
    expect(wallClock(t!, 'Australia/Lord_Howe')).toMatchObject({ d: 4, h: 2, mi: 40 });
  });

  test('a weekly window in a DST zone keeps its local time on both sides of the change', () => {
    const spec = parseCron('0 1 * * TUE');
    const a = nextStart(spec, 'Europe/Berlin', utc(2026, 3, 20));
    const b = nextStart(spec, 'Europe/Berlin', a! + 1);
    expect(iso(a)).toBe('2026-03-24T00:00:00.000Z'); // 01:00 CET
    expect(iso(b)).toBe('2026-03-30T23:00:00.000Z'); // Tue 31 March, 01:00 CEST
  });
});

describe('window state', () => {
  const daily: MaintenanceWindow = { start: '0 22 * * *', durationMs: 4 * H, timezone: 'UTC' };

  test('open across midnight; next opening after it closes', () => {
    expect(windowState([daily], utc(2026, 1, 2, 1))).toEqual({
      open: true,
      closesAt: utc(2026, 1, 2, 2),
      nextOpensAt: utc(2026, 1, 2, 22),
    });
    expect(windowState([daily], utc(2026, 1, 2, 2))).toEqual({ open: false, nextOpensAt: utc(2026, 1, 2, 22) });
    expect(msUntilWindowChange([daily], utc(2026, 1, 2, 21, 59))).toBe(60_000);
  });

  test('no windows: always open, never changes', () => {
    expect(windowState([], utc(2026, 1, 1))).toEqual({ open: true });
    expect(msUntilWindowChange([], utc(2026, 1, 1))).toBeUndefined();
  });

  test('windows of seconds (6-field cron)', () => {
    const w: MaintenanceWindow[] = [{ start: '*/10 * * * * *', durationMs: 3000, timezone: 'UTC' }];
    expect(windowState(w, utc(2026, 1, 1, 0, 0, 12))).toMatchObject({
      open: true,
      closesAt: utc(2026, 1, 1, 0, 0, 13),
    });
    expect(windowState(w, utc(2026, 1, 1, 0, 0, 13))).toMatchObject({
      open: false,
      nextOpensAt: utc(2026, 1, 1, 0, 0, 20),
    });
  });

  test('overlapping and adjacent windows merge; several zones', () => {
    const w: MaintenanceWindow[] = [
      { start: '0 1 * * *', durationMs: 2 * H, timezone: 'UTC' },
      { start: '0 4 * * *', durationMs: 2 * H, timezone: 'Europe/Berlin' }, // 03:00Z in winter
      { start: '0 5 * * *', durationMs: H, timezone: 'UTC' },
    ];
    expect(windowState(w, utc(2026, 1, 5, 1, 30))).toMatchObject({ open: true, closesAt: utc(2026, 1, 5, 6) });
  });

  test('day-of-month and day-of-week both restricted: either matches (Vixie cron)', () => {
    const spec = parseCron('0 0 13 * FRI');
    // 2026-02-06 is a Friday, 2026-02-13 a Friday the 13th, 2026-03-13 too, 2026-02-20 a Friday.
    let t = utc(2026, 2, 1);
    const days: string[] = [];
    for (let i = 0; i < 4; i++) {
      t = nextStart(spec, 'UTC', t)!;
      days.push(iso(t)!.slice(0, 10));
      t += 1000;
    }
    expect(days).toEqual(['2026-02-06', '2026-02-13', '2026-02-20', '2026-02-27']);
  });

  test('29 February comes every four years', () => {
    expect(iso(nextStart(parseCron('0 0 29 2 *'), 'UTC', utc(2026, 1, 1)))).toBe('2028-02-29T00:00:00.000Z');
    expect(nextStart(parseCron('0 0 30 2 *'), 'UTC', utc(2026, 1, 1))).toBeUndefined();
  });
});

test('durations', () => {
  expect(parseDuration('90s')).toBe(90_000);
  expect(parseDuration('1h30m')).toBe(5_400_000);
  expect(parseDuration('500ms')).toBe(500);
  expect(parseDuration('2d')).toBe(172_800_000);
  expect(parseDuration('4 hours')).toBeUndefined();
  expect(parseDuration('')).toBeUndefined();
});
