import type { ChangeThresholdsT } from '../domain/syncs.ts';
import { ConnectorError } from '../errors.ts';
import type { OpCounts } from './status.ts';

// Change thresholds: checked between diffing and delivering, so a run that would delete (or
// change) more of the destination than the sync allows fails before anything is sent. The base
// of the percentages is the snapshot: the records Backhaul wrote and the destination holds.

export interface GuardInput {
  planned: OpCounts;
  /** Records in the sync's snapshot before this run. */
  snapshot: number;
  /** Rows the model returned. */
  queried: number;
  /** The trigger allowed this run's deletes (`allowDeletions`). */
  allowDeletions: boolean;
  /** A full resync re-sends every row on purpose: the change guard does not apply. */
  fullResync: boolean;
}

const pct = (n: number, of: number) => (of > 0 ? (n * 100) / of : 0);
const round = (x: number) => Math.round(x * 10) / 10;

/**
 * Throws ConnectorError `deletion_guard` or `change_guard` (fatal, with a hint) when the plan
 * exceeds the sync's thresholds. Defaults: no numeric limits, and a model that returns 0 rows
 * against a non-empty snapshot may not delete it (`allowEmptyModel: false`).
 */
export function checkThresholds(t: ChangeThresholdsT, g: GuardInput): void {
  const del = g.planned.delete;
  if (del > 0 && !g.allowDeletions) {
    const once = 'To allow it for one run, trigger it with {"allowDeletions": true}';
    if (g.queried === 0 && g.snapshot > 0 && !t.allowEmptyModel) {
      throw guard('deletion_guard', `The model returned 0 rows while the destination holds ${g.snapshot} records this sync wrote: the run would delete ${del} of them. Nothing was sent.`,
        `Check the model's query and its source (a broken filter or an emptied table looks like this). ${once}, or set changeThresholds.allowEmptyModel.`);
    }
    if (t.maxDeletes !== null && del > t.maxDeletes) {
      throw guard('deletion_guard', `The run planned ${del} deletes, more than the sync's limit of ${t.maxDeletes}. Nothing was sent.`, `Check the model's query. ${once}, or raise changeThresholds.maxDeletes.`);
    }
    if (t.maxDeletePercent !== null && g.snapshot > 0 && pct(del, g.snapshot) > t.maxDeletePercent) {
      throw guard('deletion_guard', `The run planned ${del} deletes, ${round(pct(del, g.snapshot))}% of the ${g.snapshot} records this sync wrote, more than the sync's limit of ${t.maxDeletePercent}%. Nothing was sent.`,
        `Check the model's query. ${once}, or raise changeThresholds.maxDeletePercent.`);
    }
  }
  if (g.fullResync) return;
  const changes = g.planned.insert + g.planned.update + (g.allowDeletions ? 0 : del);
  if (t.maxChanges !== null && changes > t.maxChanges) {
    throw guard('change_guard', `The run planned ${changes} changes (inserts, updates and deletes), more than the sync's limit of ${t.maxChanges}. Nothing was sent.`, 'Check the model and its mappings, then raise changeThresholds.maxChanges or run a full resync.');
  }
  if (t.maxChangePercent !== null && g.snapshot > 0 && pct(changes, g.snapshot) > t.maxChangePercent) {
    throw guard('change_guard', `The run planned ${changes} changes, ${round(pct(changes, g.snapshot))}% of the ${g.snapshot} records this sync wrote, more than the sync's limit of ${t.maxChangePercent}%. Nothing was sent.`,
      'Check the model and its mappings, then raise changeThresholds.maxChangePercent or run a full resync.');
  }
}

function guard(code: string, message: string, hint: string): ConnectorError {
  return new ConnectorError(code, message, { classification: 'fatal', hint });
}
