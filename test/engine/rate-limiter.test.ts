import t from 'tap';
import { backoffMs, RateLimiter, type Clock } from '../../src/engine/rate-limiter.ts';

// A virtual clock: sleeping advances time instantly, so rates are measured exactly.
function virtualClock(): Clock & { elapsed(): number } {
  let now = 0;
  return { now: () => now, sleep: async (ms) => void (now += ms), elapsed: () => now };
}

const near = (a: number, b: number) => Math.abs(a - b) < 1e-9;

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

t.test('a 429 slows down once per window; clean responses bring the rate back to the ceiling, never above', async (t) => {
  const clock = virtualClock();
  const l = new RateLimiter(16, clock);
  await clock.sleep(5000);
  l.onThrottled();
  t.equal(l.currentRate, 16 * 0.7);
  l.onThrottled();
  l.onThrottled();
  t.equal(l.currentRate, 16 * 0.7, 'concurrent 429s within one window count once');
  await clock.sleep(1000);
  l.onThrottled();
  t.ok(near(l.currentRate, 16 * 0.49), 'a 429 in the next window slows down again');
  const slow = await timeFor(l, clock, 79);
  t.ok(slow >= 8_800, `at the reduced rate (${l.currentRate.toFixed(2)}/s) 79 requests took ${slow} ms`);
  for (let i = 0; i < 9; i++) l.onSuccess();
  t.ok(near(l.currentRate, 16 * 0.49), 'no recovery before a run of clean responses');
  l.onSuccess();
  t.ok(near(l.currentRate, 16 * 0.49 * 1.2), 'recovers by 20% after ten clean responses');
  for (let i = 0; i < 400; i++) l.onSuccess();
  t.equal(l.currentRate, 16, 'recovered to the ceiling and not beyond');
  for (let i = 0; i < 60; i++) {
    await clock.sleep(10_000);
    l.onThrottled();
  }
  t.equal(l.currentRate, 0.2, 'a sustained limit drives it to the floor, never to zero');
});

t.test('sporadic 429s (4% of responses) keep the rate near its ceiling', async (t) => {
  const clock = virtualClock();
  const l = new RateLimiter(20, clock);
  let min = 20;
  for (let i = 1; i <= 2000; i++) {
    await l.acquire(1);
    if (i % 25 === 0) l.onThrottled();
    else l.onSuccess();
    min = Math.min(min, l.currentRate);
  }
  t.ok(l.currentRate >= 10, `rate ${l.currentRate.toFixed(1)}/s after 2000 requests (lowest ${min.toFixed(1)})`);
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
