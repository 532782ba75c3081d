import type { Sql } from '../db/client.ts';

// Run records of rows that were never sent (invalid): written as they are found, one statement
// per 5,000 rows. Rows sent are recorded by the checkpoint of their batch (checkpoint.ts).

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
