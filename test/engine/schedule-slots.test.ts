import t from 'tap';
import fc from 'fast-check';
import { CronExpressionParser } from 'cron-parser';
import { nextFireTime } from '../../src/engine/scheduler.ts';
import { nextCronTime } from '../../src/engine/cron-time.ts';

// Slot arithmetic, without the database: interval slots stay on their grid, cron slots follow
// the expression in the IANA time zone across every kind of transition.

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const iso = (ms: number) => new Date(ms).toISOString();

t.test('interval slots: on the anchor grid, strictly after the given time, and the first such', async (t) => {
  const epochs = fc.integer({ min: Date.UTC(2000, 0, 1), max: Date.UTC(2100, 0, 1) });
  fc.assert(
    fc.property(epochs, epochs, fc.integer({ min: 10, max: 31_536_000 }), fc.boolean(), (anchor, after, everySeconds, explicit) => {
      const createdAt = new Date(explicit ? Date.UTC(2001, 0, 1) : anchor);
      const schedule = explicit ? { type: 'interval' as const, everySeconds, anchor: iso(anchor) } : { type: 'interval' as const, everySeconds };
      const next = nextFireTime({ schedule, createdAt }, new Date(after))!.getTime();
      const every = everySeconds * 1000;
      return (next - anchor) % every === 0 && next > after && next - every <= after;
    }),
    { numRuns: 5000 },
  );
});

t.test('interval slots: a late fire plans the next slot of the grid; slots it overran are skipped', async (t) => {
  const createdAt = new Date('2026-03-01T10:00:00.250Z');
  const s = { schedule: { type: 'interval' as const, everySeconds: 10 }, createdAt };
  // The fire of the 10:00:10.250 slot, processed 0.17 s late (the drift issue 12 measured), then 7 s late.
  t.equal(nextFireTime(s, new Date('2026-03-01T10:00:10.420Z'))!.toISOString(), '2026-03-01T10:00:20.250Z');
  t.equal(nextFireTime(s, new Date('2026-03-01T10:00:27.250Z'))!.toISOString(), '2026-03-01T10:00:30.250Z');
  // 25 s late: the 10:00:20.250 and 10:00:30.250 slots are over, the next is 10:00:40.250.
  t.equal(nextFireTime(s, new Date('2026-03-01T10:00:35.250Z'))!.toISOString(), '2026-03-01T10:00:40.250Z');
  t.equal(nextFireTime(s, new Date('2026-03-01T10:00:40.250Z'))!.toISOString(), '2026-03-01T10:00:50.250Z', 'a time on the grid plans the following slot');
  const anchored = { schedule: { type: 'interval' as const, everySeconds: 3600, anchor: '2026-01-01T00:30:00.000Z' }, createdAt };
  t.equal(nextFireTime(anchored, new Date('2026-03-01T10:00:00Z'))!.toISOString(), '2026-03-01T10:30:00.000Z', 'an explicit anchor sets the phase');
  const future = { schedule: { type: 'interval' as const, everySeconds: 86_400, anchor: '2030-06-01T06:00:00Z' }, createdAt };
  t.equal(nextFireTime(future, new Date('2026-03-01T10:00:00Z'))!.toISOString(), '2026-03-02T06:00:00.000Z', 'a future anchor also only sets the phase');
  t.equal(nextFireTime({ schedule: { type: 'manual' }, createdAt }, new Date()), null);
});

// ---- cron in a time zone ----

/**
 * An independent model of a zone's offsets: transitions found by sampling Intl every 6 hours and
 * bisecting to the second, then plain arithmetic (no two transitions are within 6 hours).
 */
function zoneModel(tz: string, from: number, to: number) {
  const f = new Intl.DateTimeFormat('en-US', { timeZone: tz, timeZoneName: 'longOffset' });
  const off = (ms: number) => {
    const name = f.formatToParts(ms).find((p) => p.type === 'timeZoneName')!.value; // GMT, GMT+05:45, GMT-03:00
    const m = /GMT([+-])(\d\d):(\d\d)(?::(\d\d))?/.exec(name);
    return m ? (m[1] === '-' ? -1 : 1) * ((+m[2]! * 60 + +m[3]!) * 60 + +(m[4] ?? 0)) * 1000 : 0;
  };
  const segments: { start: number; offset: number }[] = [{ start: -Infinity, offset: off(from) }];
  for (let a = from; a < to; a += 6 * HOUR) {
    if (off(a + 6 * HOUR) === off(a)) continue;
    let lo = a;
    let hi = a + 6 * HOUR;
    while (hi - lo > 1000) {
      const mid = lo + Math.floor((hi - lo) / 2000) * 1000;
      if (off(mid) === off(a)) lo = mid;
      else hi = mid;
    }
    segments.push({ start: hi, offset: off(hi) });
  }
  const offsetAt = (ms: number) => {
    let o = segments[0]!.offset;
    for (const s of segments) if (s.start <= ms) o = s.offset;
    return o;
  };
  /** Instants showing wall-clock time w, ascending. */
  const instants = (w: number) => [...new Set(segments.map((s) => w - s.offset))].filter((ms) => ms + offsetAt(ms) === w).sort((a, b) => a - b);
  /** The offset before the gap that skips wall-clock time w. */
  const before = (w: number) => {
    for (let i = 1; i < segments.length; i++) {
      const prev = segments[i - 1]!.offset;
      const s = segments[i]!;
      if (s.offset > prev && w >= s.start + prev && w < s.start + s.offset) return prev;
    }
    throw new Error(`no gap holds ${iso(w)}`);
  };
  const transitions = segments.slice(1).map((s) => s.start);
  return { offsetAt, instants, before, transitions };
}

/** The expected next slot, from the rules stated in src/engine/cron-time.ts applied to every matching wall-clock time. */
function expectedNext(expression: string, zone: ReturnType<typeof zoneModel>, after: number): number {
  const everyHour = CronExpressionParser.parse(expression, { tz: 'UTC' }).fields.hour.values.length === 24;
  const it = CronExpressionParser.parse(expression, { tz: 'UTC', currentDate: new Date(after + zone.offsetAt(after) - DAY) });
  let best = Infinity;
  for (;;) {
    const w = it.next().getTime();
    if (best !== Infinity && w > best + zone.offsetAt(best) + DAY) return best; // a day past the best: beyond any transition's reach
    const at = zone.instants(w);
    const fires = at.length === 0 ? [w - zone.before(w)] : everyHour ? at : [at[0]!];
    for (const ms of fires) if (ms > after && ms < best) best = ms;
  }
}

// Zones whose transitions are each a kind: one hour at 02:00/03:00 (Paris, New York), at midnight
// (Santiago, Havana), at 22:00 (Nuuk), half an hour (Lord Howe), two hours (Troll), at 02:45
// (Chatham), negative DST in tzdb (Dublin), Ramadan changes (Casablanca); and no DST.
const ZONES = [
  'Europe/Paris', 'America/New_York', 'America/Santiago', 'America/Havana', 'America/Nuuk', 'America/Scoresbysund',
  'Australia/Lord_Howe', 'Antarctica/Troll', 'Pacific/Chatham', 'Europe/Dublin', 'Africa/Casablanca', 'Asia/Kolkata', 'UTC',
];
const FROM = Date.UTC(2026, 0, 1);
const TO = Date.UTC(2028, 0, 1);
const models = new Map(ZONES.map((z) => [z, zoneModel(z, FROM - 3 * DAY, TO + 70 * DAY)]));

const field = (max: number) =>
  fc.oneof(
    fc.constant('*'),
    fc.integer({ min: 0, max }).map(String),
    fc.constantFrom(2, 3, 4, 5, 6, 10, 12, 15, 20, 30).filter((k) => k <= max).map((k) => `*/${k}`),
    fc.tuple(fc.integer({ min: 0, max }), fc.integer({ min: 0, max })).map(([a, b]) => `${Math.min(a, b)}-${Math.max(a, b)}`),
    fc.uniqueArray(fc.integer({ min: 0, max }), { minLength: 2, maxLength: 3 }).map((v) => v.join(',')),
  );
const expressions = fc
  .tuple(field(59), field(23), fc.oneof({ weight: 4, arbitrary: fc.constant('*') }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 28 }).map(String) }), fc.oneof({ weight: 4, arbitrary: fc.constant('*') }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 6 }).map(String) }))
  .map((f) => `${f[0]} ${f[1]} ${f[2]} * ${f[3]}`);

t.test('cron slots equal the stated DST rules, for random expressions, zones and times (mostly near transitions)', async (t) => {
  const zoneAndTime = fc.constantFrom(...ZONES).chain((tz) => {
    const trans = models.get(tz)!.transitions.filter((x) => x >= FROM && x < TO);
    const anywhere = fc.integer({ min: FROM, max: TO });
    const near = trans.length ? fc.tuple(fc.constantFrom(...trans), fc.integer({ min: -2 * DAY, max: 2 * DAY })).map(([x, d]) => x + d) : anywhere;
    return fc.tuple(fc.constant(tz), fc.oneof({ weight: 4, arbitrary: near }, { weight: 1, arbitrary: anywhere }));
  });
  fc.assert(
    fc.property(expressions, zoneAndTime, fc.boolean(), (expression, [tz, after], onMinute) => {
      const a = onMinute ? after - (after % 60_000) : after;
      const got = nextCronTime(expression, tz, new Date(a)).getTime();
      const want = expectedNext(expression, models.get(tz)!, a);
      if (got !== want) throw new Error(`${expression} in ${tz} after ${iso(a)}: got ${iso(got)}, want ${iso(want)}`);
    }),
    { numRuns: 600 },
  );
});

t.test('a daily job runs once a day through each zone\'s transitions: never a skipped day, never twice', async (t) => {
  // Consecutive fires are a day apart, give or take the transition (at most 2 hours): a skipped
  // day would make 48 hours, a repeat a few.
  for (const tz of ZONES) {
    for (const tr of models.get(tz)!.transitions.filter((x) => x >= FROM && x < FROM + 365 * DAY)) {
      for (let minute = 0; minute < 24 * 60; minute += 15) {
        const expression = `${minute % 60} ${Math.floor(minute / 60)} * * *`;
        let at = nextCronTime(expression, tz, new Date(tr - 3 * DAY)).getTime();
        for (let i = 0; i < 4; i++) {
          const next = nextCronTime(expression, tz, new Date(at)).getTime();
          if (Math.abs(next - at - DAY) > 2 * HOUR) t.fail(`${expression} in ${tz} around ${iso(tr)}: ${iso(at)} then ${iso(next)}`);
          at = next;
        }
      }
    }
  }
  t.pass('checked');
});

t.test('cron slots across DST, worked examples', async (t) => {
  const next = (expression: string, tz: string, after: string) => nextCronTime(expression, tz, new Date(after)).toISOString();
  t.equal(next('0 9 * * *', 'Europe/Paris', '2026-01-15T07:00:00Z'), '2026-01-15T08:00:00.000Z', 'winter: UTC+1');
  t.equal(next('0 9 * * *', 'Europe/Paris', '2026-07-15T06:00:00Z'), '2026-07-15T07:00:00.000Z', 'summer: UTC+2');
  t.equal(next('30 8 * * 1', 'America/New_York', '2026-03-04T00:00:00Z'), '2026-03-09T12:30:00.000Z', 'next Monday, EDT');
  t.equal(next('30 2 * * *', 'Europe/Paris', '2026-03-28T02:00:00Z'), '2026-03-29T01:30:00.000Z', '02:30 does not exist on 29 March: 03:30 CEST');
  t.equal(next('30 2 * * *', 'Europe/Paris', '2026-10-25T00:00:00Z'), '2026-10-25T00:30:00.000Z', '02:30 happens twice on 25 October: the first (CEST)');
  t.equal(next('30 2 * * *', 'Europe/Paris', '2026-10-25T00:30:00Z'), '2026-10-26T01:30:00.000Z', '... and only the first');
  t.equal(next('0 * * * *', 'Europe/Paris', '2026-10-25T00:00:00Z'), '2026-10-25T01:00:00.000Z', 'an hourly job fires in both passes of 02:00');
  t.equal(next('0 0 * * *', 'America/Santiago', '2026-09-05T12:00:00Z'), '2026-09-06T04:00:00.000Z', 'midnight does not exist on 6 September in Santiago: 01:00 -03');
  t.equal(next('15 2 * * *', 'Australia/Lord_Howe', '2026-10-03T12:00:00Z'), '2026-10-03T15:45:00.000Z', 'a half-hour gap: 02:15 fires at 02:45 +11');
  t.equal(next('0 1 * * *', 'Australia/Lord_Howe', '2026-04-04T12:00:00Z'), '2026-04-04T14:00:00.000Z', 'Lord Howe in April (cron-parser throws here)');
  t.equal(next('0 2 * * *', 'Antarctica/Troll', '2026-10-24T12:00:00Z'), '2026-10-25T00:00:00.000Z', 'a two-hour repeat: once');
  t.equal(next('0 2 * * *', 'Antarctica/Troll', '2026-10-25T00:00:00Z'), '2026-10-26T02:00:00.000Z', '... the next day at 02:00 +00');
  t.equal(next('0 22 * * *', 'America/Nuuk', '2026-03-28T12:00:00Z'), '2026-03-29T00:00:00.000Z', '22:00 -02, the hour before Nuuk\'s change (cron-parser skips that day)');
  t.equal(next('30 23 * * *', 'America/Nuuk', '2026-03-28T12:00:00Z'), '2026-03-29T01:30:00.000Z', '23:30 does not exist on 28 March in Nuuk: 00:30 -01');
});
