import type { Sql } from '../db/client.ts';

// Run records of rows that were never sent (invalid): written as they are found, one statement
// per 5,000 rows. Rows sent are recorded by the checkpoint of their batch (checkpoint.ts): in
// bulk (run_batches) against a plan built before anything was recorded, else one row each.

export interface InvalidRow {
  pk: string;
  code: string;
  message: string;
}

export async function recordInvalid(sql: Sql, run: { id: string; workspaceId: string; syncId: string }, rows: InvalidRow[]): Promise<void> {
  for (let i = 0; i < rows.length; i += 5000) {
    const chunk = rows.slice(i, i + 5000);
    await sql`
      insert into run_records (run_id, workspace_id, sync_id, primary_key, operation, status, error_code, error_message, attempts)
      select ${run.id}, ${run.workspaceId}, ${run.syncId}, r.pk, 'none', 'invalid', r.code, r.message, 0
      from unnest(${chunk.map((r) => r.pk)}::text[], ${chunk.map((r) => r.code)}::text[], ${chunk.map((r) => r.message.slice(0, 2000))}::text[]) as r(pk, code, message)
      on conflict do nothing`;
  }
}

/**
 * Moves a run's bulk records (run_batches) into run_records, one row per (row, operation), in one
 * statement. Before a plan is rebuilt mid-run: its checkpoints record by row with conflict
 * handling, which needs every earlier outcome of the run there.
 */
export async function unbundleRecords(sql: Sql, runId: string): Promise<void> {
  await sql`
    with moved as (delete from run_batches where run_id = ${runId} returning *)
    insert into run_records (run_id, workspace_id, sync_id, primary_key, operation, status, attempts, batch, record_id, redelivered, created_at)
    select m.run_id, m.workspace_id, m.sync_id, u.pk, m.operation, 'succeeded', coalesce(u.attempts, 1), m.batch, u.record_id, coalesce(u.again, false), m.created_at
    from moved m cross join lateral unnest(m.primary_keys, m.record_ids, m.attempts, m.redelivered) as u(pk, record_id, attempts, again)
    on conflict do nothing`;
}
