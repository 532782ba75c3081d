// Terminology
// - run: one execution of a sync. Status enum is public and stable (adding a value is breaking).
// - phase: querying → diffing → delivering → finalizing.
// - plan: the operations a run decided to send (per-run table), each pending/succeeded/rejected.
// - snapshot: what the destination is known to hold for a sync; only acknowledged rows enter it.
// - checkpoint: one transaction per acknowledged batch (plan state, snapshot, run records, counts).

export const RUN_STATUSES = ['queued', 'running', 'succeeded', 'partially_succeeded', 'failed', 'cancelled'] as const;
export type RunStatus = (typeof RUN_STATUSES)[number];
export const TERMINAL: ReadonlySet<RunStatus> = new Set(['succeeded', 'partially_succeeded', 'failed', 'cancelled']);

export const PHASES = ['querying', 'diffing', 'delivering', 'finalizing'] as const;
export type Phase = (typeof PHASES)[number];

export type Operation = 'insert' | 'update' | 'delete';
export type OpCounts = Record<Operation, number>;

export interface RunCounts {
  queried: number;
  invalid: number;
  planned: OpCounts;
  succeeded: OpCounts;
  rejected: OpCounts;
}

export function emptyCounts(): RunCounts {
  const z = (): OpCounts => ({ insert: 0, update: 0, delete: 0 });
  return { queried: 0, invalid: 0, planned: z(), succeeded: z(), rejected: z() };
}

export interface RunError {
  code: string;
  message: string;
  hint?: string;
  retryable: boolean;
}

export interface PhaseTiming {
  name: Phase;
  startedAt: string;
  finishedAt: string | null;
}

/** Channel of pg_notify run updates (GraphQL subscriptions listen on it, across instances). */
export const RUN_CHANNEL = 'backhaul_runs';
