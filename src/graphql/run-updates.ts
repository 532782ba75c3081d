import type { RunViewT } from '../domain/runs.ts';
import { TERMINAL, type RunStatus } from '../engine/status.ts';

// What a `runUpdated` subscriber receives for each run notification (PostgreSQL NOTIFY on
// `backhaul_runs`). A notification says "this run changed"; the event describes the run as it is
// when the event is delivered, so an event's `status`/`phase` and its embedded `run` always agree
// (a notification can arrive after the run moved on). Consecutive events that would say the same
// thing to this subscriber — same run, status, phase and counts, as when a run is published twice
// for one phase or notifications lag behind — are sent once. A terminal run has `phase: null`.

export interface RunNotification {
  runId: string;
  syncId: string;
  workspaceId: string;
  status: string;
  phase: string | null;
}

/** An event: the notification's fields, aligned on the run loaded for it (null when it is gone). */
export interface RunUpdateEvent extends RunNotification {
  run: RunViewT | null;
}

/** A terminal run has no current phase. */
export function phaseOf(status: string, phase: string | null): string | null {
  return TERMINAL.has(status as RunStatus) ? null : phase;
}

/**
 * Maps a subscriber's stream of notifications to events: each loads the run (`load`: in the
 * subscriber's workspace, null when gone), takes status/phase from it, and drops an event equal
 * to the last one sent for that run.
 */
export async function* runUpdates(source: AsyncIterable<RunNotification>, load: (runId: string) => Promise<RunViewT | null>): AsyncGenerator<RunUpdateEvent> {
  const last = new Map<string, string>();
  for await (const n of source) {
    const run = await load(n.runId);
    const status = run?.status ?? n.status;
    const phase = phaseOf(status, run ? run.phase : n.phase);
    const key = JSON.stringify([status, phase, run?.counts ?? null]);
    if (last.get(n.runId) === key) continue;
    last.set(n.runId, key);
    // Only the latest state of a handful of runs matters: forget the oldest beyond that.
    if (last.size > 100) last.delete(last.keys().next().value!);
    yield { ...n, status, phase, run };
  }
}
