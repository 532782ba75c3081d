import { AbortedError } from './batch.ts';

// Bounded waits. A source or destination that stops answering must not hold a worker slot: every
// wait of a run is raced against the run's signal (cancel, shutdown, deadline), so the run moves
// on at once even when the remote call itself cannot be interrupted.

/** Rejects with the signal's reason (or AbortedError) as soon as it aborts; otherwise settles like `p`. */
export function raceAbort<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    p.catch(() => {});
    return Promise.reject(reasonOf(signal));
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      p.catch(() => {});
      reject(reasonOf(signal));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

/**
 * Iterates `source`, each step raced against `signal`. On abort the iterator's `return()` is
 * called without waiting for it (a source stuck in a read can't hold the run), and the loop throws.
 */
export async function* abortable<T>(source: AsyncIterable<T>, signal: AbortSignal): AsyncGenerator<T> {
  const it = source[Symbol.asyncIterator]();
  let done = false;
  try {
    for (;;) {
      const step = await raceAbort(it.next(), signal);
      if (step.done) {
        done = true;
        return;
      }
      yield step.value;
    }
  } finally {
    if (!done) {
      const r = it.return?.();
      if (r) void Promise.resolve(r).catch(() => {});
    }
  }
}

function reasonOf(signal: AbortSignal): unknown {
  return signal.reason instanceof Error ? signal.reason : new AbortedError();
}
