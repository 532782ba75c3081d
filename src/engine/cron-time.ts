import { CronExpressionParser } from 'cron-parser';

// The next slot of a cron expression in an IANA time zone. cron-parser matches the expression on
// a plain (UTC) calendar; the time zone is handled here, on the zone's wall clock. cron-parser's
// own zone handling assumes every transition is one hour: across others it skips a day
// (America/Nuuk's 22:00 change, Pacific/Chatham's 02:45 one), fires twice (Antarctica/Troll's
// two-hour fall-back) or throws "loop limit exceeded" (Australia/Lord_Howe's half hour).
//
// The rules (cronie's, and RFC 5545 §3.3.5 for a time that does not exist):
// - a wall-clock time that a spring-forward skips fires as far past the gap as it was into it
//   (02:30 in a 02:00→03:00 gap fires at 03:30): a daily job still runs that day;
// - a wall-clock time that a fall-back repeats fires once, on its first occurrence, unless the
//   expression matches every hour: then it fires in both passes (an hourly job keeps its rhythm).

const DAY = 86_400_000;
const formats = new Map<string, Intl.DateTimeFormat>();

/** The wall-clock time of instant `t` (ms) in zone `tz`, as ms of a plain UTC calendar. */
export function wallClock(t: number, tz: string): number {
  let f = formats.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { timeZone: tz, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric' });
    formats.set(tz, f);
  }
  const p: Record<string, number> = {};
  for (const part of f.formatToParts(t)) if (part.type !== 'literal') p[part.type] = Number(part.value);
  return Date.UTC(p.year!, p.month! - 1, p.day!, p.hour!, p.minute!, p.second!) + (((t % 1000) + 1000) % 1000);
}

const offsetAt = (t: number, tz: string) => wallClock(t, tz) - t;

/** The instants (ascending) whose wall-clock time in `tz` is `w`: none in a gap, two in a repeat. */
export function instantsOf(w: number, tz: string): number[] {
  const candidates = new Set([w - offsetAt(w - DAY, tz), w - offsetAt(w + DAY, tz)]);
  return [...candidates].filter((t) => wallClock(t, tz) === w).sort((a, b) => a - b);
}

/** The instants at which wall-clock time `w` fires under the rules above. */
export function firesOf(w: number, tz: string, everyHour: boolean): number[] {
  const at = instantsOf(w, tz);
  if (at.length === 0) return [w - offsetAt(w - DAY, tz)]; // in a gap: the offset before it
  return everyHour ? at : at.slice(0, 1);
}

/** How far the offset moves within a day either side of `t` (0 away from any transition). */
function transitionSpan(t: number, tz: string): number {
  const here = offsetAt(t, tz);
  return Math.max(Math.abs(here - offsetAt(t - DAY, tz)), Math.abs(offsetAt(t + DAY, tz) - here));
}

/**
 * The first slot of `expression` (five-field cron, minute resolution) in IANA zone `tz` strictly
 * after instant `after`. Throws cron-parser's error for an invalid expression.
 */
export function nextCronTime(expression: string, tz: string, after: Date): Date {
  const everyHour = CronExpressionParser.parse(expression, { tz: 'UTC' }).fields.hour.values.length === 24;
  const a = after.getTime();
  // Wall-clock times are visited in order; near a transition a time's instant can come before an
  // earlier time's (the gap's shifted times, a repeat's second pass), so the walk starts and
  // ends a transition's span beyond the first candidate.
  const start = wallClock(a, tz) - transitionSpan(a, tz);
  const it = CronExpressionParser.parse(expression, { tz: 'UTC', currentDate: new Date(start - 1) });
  let best: number | null = null;
  let until = Infinity;
  for (;;) {
    const w = it.next().getTime();
    if (w > until) break;
    for (const t of firesOf(w, tz, everyHour)) {
      if (t > a && (best === null || t < best)) {
        best = t;
        until = wallClock(best, tz) + transitionSpan(best, tz);
      }
    }
  }
  return new Date(best!);
}
