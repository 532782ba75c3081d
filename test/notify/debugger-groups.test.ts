import t from 'tap';
import pino from 'pino';
import { connectDatabase } from '../../src/db/client.ts';
import { migrate } from '../../src/db/migrate.ts';
import { createDebugger } from '../../src/notify/debugger.ts';
import type { BatchResult } from '../../src/engine/batch.ts';
import type { RunRow } from '../../src/domain/runs.ts';
import { freshDatabase } from '../helpers/backhaul.ts';

// The row debugger inserts the exchanges of batches that arrive while an insert is in flight in
// one statement. Every batch's exchanges must still be stored exactly once, each resolved only
// once stored, and one exchange PostgreSQL cannot store (a NUL in a body: jsonb refuses it) must
// lose only its own batch's exchanges, not those grouped with it.

t.test('grouped exchange inserts: every batch stored once, a bad one alone lost', async (t) => {
  const database = connectDatabase(await freshDatabase(t), { max: 4 });
  t.teardown(() => database.close());
  const { sql } = database;
  await migrate(sql);
  const runId = 'run_dbggroups';
  // The run row only (its sync is not needed here: foreign keys off for this insert).
  await sql.begin(async (tx) => {
    await tx`set local session_replication_role = replica`;
    await tx`insert into runs (id, workspace_id, sync_id, status, trigger, counts, attempts, started_at) values (${runId}, 'ws_1', 'sync_1', 'running', 'api', '{}'::jsonb, 1, now())`;
  });
  const warnings: { batch: number }[] = [];
  const logger = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(JSON.parse(line)) });
  const dbg = createDebugger({ database, logger, retentionDays: 7 });
  const run = { id: runId, workspaceId: 'ws_1' } as RunRow;
  const BAD = 13;
  const result = (batch: number): BatchResult => ({
    outcomes: [1, 2].map((k) => ({ op: { seq: batch * 10 + k, pk: `${batch}-${k}`, op: 'insert', payload: '{}', attempts: 0, recordId: null }, status: 'succeeded', attempts: 1 })),
    exchanges: [
      {
        exchange: {
          request: { method: 'POST', url: 'http://dest/contacts', headers: {}, body: batch === BAD ? 'a\u0000b' : `[batch ${batch}]` },
          response: { status: 200, headers: {}, body: 'ok' },
          durationMs: 1,
          rowIndexes: [0, 1],
        },
        seqs: [batch * 10 + 1, batch * 10 + 2],
      },
    ],
  });
  // 40 batches at once: most queue behind an insert in flight and go in groups.
  const stored: number[] = [];
  await Promise.all(Array.from({ length: 40 }, (_, i) => dbg.batchDelivered(run, i + 1, result(i + 1)).then(() => stored.push(i + 1))));
  await dbg.flush(runId);
  t.equal(stored.length, 40, 'every call resolved');
  const rows = await sql<{ batch: number; primary_keys: string[]; body: string }[]>`
    select batch, primary_keys, request->>'body' as body from run_exchanges where run_id = ${runId} order by batch`;
  const expected = Array.from({ length: 40 }, (_, i) => i + 1).filter((b) => b !== BAD);
  t.same(rows.map((r) => r.batch), expected, 'each batch stored once, all but the unstorable one');
  t.same(rows.map((r) => [r.primary_keys, r.body]), expected.map((b) => [[`${b}-1`, `${b}-2`], `[batch ${b}]`]), 'with its rows and body');
  t.same(warnings.map((w) => w.batch), [BAD], 'the unstorable batch is logged, alone');
});
