import t from 'tap';
import { backoffMs, RateLimiter, type Clock } from '../../src/engine/rate-limiter.ts';

// A virtual clock: sleeping advances time instantly, so rates are measured exactly.
function virtualClock(): Clock & { elapsed(): number } {
  let now = 0;
  return { now: () => now, sleep: async (ms) => void (now += ms), elapsed: () => now };
}

async function timeFor(l: RateLimiter, clock: { elapsed(): number }, requests: number): Promise<number> {
  const start = clock.elapsed();
  for (let i = 0; i < requests; i++) await l.acquire(1);
  return clock.elapsed() - start;
}

t.test('holds the configured rate', async (t) => {
  const clock = virtualClock();
  const l = new RateLimiter(10, clock);
  const ms = await timeFor(l, clock, 101);
  t.ok(ms >= 9_900 && ms <= 10_100, `101 requests at 10/s took ${ms} ms`);
});

t.test('429s halve the rate; clean responses bring it back to the ceiling, never above', async (t) => {
  const clock = virtualClock();
  const l = new RateLimiter(16, clock);
  l.onThrottled();
  t.equal(l.currentRate, 8);
  l.onThrottled();
  t.equal(l.currentRate, 4);
  const slow = await timeFor(l, clock, 41);
  t.ok(slow >= 9_500, `at the reduced rate 41 requests took ${slow} ms`);
  for (let i = 0; i < 19; i++) l.onSuccess();
  t.equal(l.currentRate, 4, 'no recovery before a run of clean responses');
  l.onSuccess();
  t.equal(l.currentRate, 5);
  for (let i = 0; i < 400; i++) l.onSuccess();
  t.equal(l.currentRate, 16, 'recovered to the ceiling and not beyond');
  for (let i = 0; i < 50; i++) l.onThrottled();
  t.ok(l.currentRate >= 0.2, 'never stops completely');
});

t.test('an unlimited limiter never waits', async (t) => {
  const clock = virtualClock();
  const l = new RateLimiter(0, clock);
  t.equal(await timeFor(l, clock, 1000), 0);
});

t.test('backoff grows exponentially with jitter, is capped, and honours Retry-After', async (t) => {
  const at = (attempt: number, r: number, retryAfterMs?: number) => backoffMs(attempt, { baseMs: 100, maxMs: 5000, random: () => r, retryAfterMs });
  t.equal(at(1, 0), 50);
  t.equal(at(1, 1), 100);
  t.equal(at(4, 1), 800);
  t.equal(at(20, 1), 5000, 'capped');
  t.equal(at(1, 0.5, 3000), 3000, 'Retry-After wins when longer');
  t.equal(at(6, 1, 10), 3200, 'but never shortens the backoff');
});
