// A token bucket per destination connection, shared by every run in this process, with adaptive
// rate: a 429 cuts the rate by 30%, at most once per cooldown window (concurrent requests that hit
// the same limit count once), and every run of clean responses raises it by 20% back towards the
// configured ceiling. Sporadic 429s therefore cost little; a sustained limit drives the rate down.

export interface Clock {
  now(): number;
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const realClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve) => {
      if (ms <= 0 || signal?.aborted) return resolve();
      const t = setTimeout(done, ms);
      function done() {
        signal?.removeEventListener('abort', done);
        clearTimeout(t);
        resolve();
      }
      signal?.addEventListener('abort', done, { once: true });
    }),
};

const MIN_RATE = 0.2;
const DECREASE = 0.7;
const INCREASE = 1.2;
const RECOVER_AFTER = 10; // clean responses before each step back up
const COOLDOWN_MS = 1000; // at most one decrease per window

export class RateLimiter {
  /** Configured ceiling (requests per second); Infinity = unlimited. */
  private ceiling: number;
  private rate: number;
  private tokens: number;
  private last: number;
  private clean = 0;
  private lastDecrease = -Infinity;
  private readonly clock: Clock;
  /** Requests waiting, in order, so a burst is served fairly. */
  private queue: Promise<void> = Promise.resolve();

  constructor(ratePerSecond: number, clock: Clock = realClock) {
    this.clock = clock;
    this.ceiling = ratePerSecond > 0 ? ratePerSecond : Infinity;
    this.rate = this.ceiling;
    this.tokens = Math.min(this.burst(), 1);
    this.last = clock.now();
  }

  get currentRate(): number {
    return this.rate;
  }

  private burst(): number {
    return Number.isFinite(this.rate) ? Math.max(1, this.rate) : Infinity;
  }

  setCeiling(ratePerSecond: number): void {
    const c = ratePerSecond > 0 ? ratePerSecond : Infinity;
    if (c === this.ceiling) return;
    this.ceiling = c;
    this.rate = Math.min(this.rate, c);
    if (!Number.isFinite(this.rate)) this.rate = c;
  }

  /** Waits until `n` requests may be sent. */
  acquire(n = 1, signal?: AbortSignal): Promise<void> {
    const next = this.queue.then(() => this.take(n, signal));
    this.queue = next.catch(() => {});
    return next;
  }

  private async take(n: number, signal?: AbortSignal): Promise<void> {
    if (!Number.isFinite(this.rate)) return;
    for (;;) {
      const now = this.clock.now();
      this.tokens = Math.min(this.burst(), this.tokens + ((now - this.last) / 1000) * this.rate);
      this.last = now;
      // A request bigger than the bucket may go once the bucket is full (and drives it negative).
      if (this.tokens >= Math.min(n, this.burst())) {
        this.tokens -= n;
        return;
      }
      if (signal?.aborted) return;
      const need = Math.min(n, this.burst()) - this.tokens;
      await this.clock.sleep(Math.ceil((need / this.rate) * 1000), signal);
    }
  }

  /** The destination answered 429: slow down (once per cooldown window, however many requests saw it). */
  onThrottled(): void {
    this.clean = 0;
    const now = this.clock.now();
    const window = Math.max(COOLDOWN_MS, Number.isFinite(this.rate) ? 1000 / this.rate : 0);
    if (now - this.lastDecrease < window) return;
    this.lastDecrease = now;
    const base = Number.isFinite(this.rate) ? this.rate : 50;
    this.rate = Math.max(MIN_RATE, base * DECREASE);
    this.tokens = Math.min(this.tokens, 0);
  }

  /** A clean response: after a run of them, recover by 20% towards the ceiling. */
  onSuccess(): void {
    if (this.rate >= this.ceiling) return;
    if (++this.clean >= RECOVER_AFTER) {
      this.clean = 0;
      this.rate = Math.min(this.ceiling, this.rate * INCREASE);
    }
  }
}

const limiters = new Map<string, RateLimiter>();

/** The process-wide limiter of a destination connection. */
export function limiterFor(connectionId: string, ratePerSecond: number, clock: Clock = realClock): RateLimiter {
  let l = limiters.get(connectionId);
  if (!l) {
    l = new RateLimiter(ratePerSecond, clock);
    limiters.set(connectionId, l);
  } else {
    l.setCeiling(ratePerSecond);
  }
  return l;
}

/** Exponential backoff with full jitter; a remote's Retry-After wins when it asks for longer. */
export function backoffMs(attempt: number, opts: { baseMs: number; maxMs: number; retryAfterMs?: number; random?: () => number }): number {
  const exp = Math.min(opts.maxMs, opts.baseMs * 2 ** Math.max(0, attempt - 1));
  const jittered = exp / 2 + (opts.random ?? Math.random)() * (exp / 2);
  return opts.retryAfterMs !== undefined ? Math.max(opts.retryAfterMs, jittered) : jittered;
}
