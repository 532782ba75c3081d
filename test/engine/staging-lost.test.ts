import t from 'tap';
import { connectDatabase } from '../../src/db/client.ts';
import { migrate } from '../../src/db/migrate.ts';
import { buildPlan, markDuplicates } from '../../src/engine/diff.ts';
import { keysWritten } from '../../src/engine/fingerprint-cache.ts';
import { readPending } from '../../src/engine/plan.ts';
import { createStaging, dropRunTables, markStagingIntact, STAGING_SCHEMA, StagingLostError, stagingIntact, stagingNames, StagingWriter } from '../../src/engine/staging.ts';
import { freshDatabase } from '../helpers/backhaul.ts';

// Crash recovery of PostgreSQL (and a promoted standby) empties every unlogged table and keeps
// the tables. Every reader that decides what a run sends or deletes must refuse staged rows and
// plans emptied that way instead of reading "no rows" (a mirror plan over no rows deletes the
// whole destination; a plan read as ended early ends the run with rows unsent). The reset is
// emulated here as recovery does it (every unlogged table of the run truncated); the real crash
// is test/chaos/db-crash.test.ts.

// The plan is a view over the staged rows when the sync's snapshot is empty, else a table.
for (const snapshot of ['empty', 'with a record'] as const) {
t.test(`staged rows and plans emptied by a crash are refused by every reader (snapshot ${snapshot})`, async (t) => {
  const database = connectDatabase(await freshDatabase(t), { max: 3 });
  t.teardown(() => database.close());
  const { sql } = database;
  await migrate(sql);
  const runId = 'run_stglost1';
  const names = stagingNames(runId);
  const syncId = 'sync_lost';
  // A record of another row (mirror: planned as a delete).
  if (snapshot !== 'empty') await sql`insert into sync_snapshots (sync_id, match_key, primary_key, hash, match_value) values (${syncId}, 'gone@example.com', '99', 'h', '"gone@example.com"')`;

  await createStaging(sql, runId);
  t.equal(await stagingIntact(sql, runId), false, 'not intact while querying');
  const writer = await StagingWriter.open(sql, runId);
  for (let i = 1; i <= 5; i++) {
    const email = `u${i}@example.com`;
    await writer.write(String(i), `h${i}`, JSON.stringify({ email }), 'v', JSON.stringify(email), email, null);
  }
  await writer.end();
  // An incremental run compared in memory also leaves the records its key scan did not show.
  await sql`create unlogged table ${sql(STAGING_SCHEMA)}.${sql(names.unmatched)} (pk text, fp text)`;
  await markStagingIntact(sql, runId);
  t.equal(await stagingIntact(sql, runId), true, 'intact once querying completed');

  const plan = { syncId, mode: 'mirror' as const, fullResync: false, matchField: 'email' };
  t.same(await markDuplicates(sql, runId), [], 'marking duplicates reads intact rows');
  const { planned } = await buildPlan(sql, runId, plan);
  const deletes = snapshot === 'empty' ? 0 : 1;
  t.same(planned, { insert: 5, update: 0, delete: deletes });
  const [{ kind }] = await sql`select relkind as kind from pg_class where oid = to_regclass(${`${STAGING_SCHEMA}.${names.plan}`})`;
  t.equal(kind, snapshot === 'empty' ? 'v' : 'r', snapshot === 'empty' ? 'the plan is a view of the staged rows' : 'the plan is a table');
  const all = (await readPending(sql, runId, 0, 100)).ops;
  t.same(all.map((o) => [o.pk, o.op]), [...[1, 2, 3, 4, 5].map((i) => [String(i), 'insert']), ...(deletes ? [['99', 'delete']] : [])], 'the plan is read to its end, in order');
  t.equal((await readPending(sql, runId, 0, 2)).ops.length, 2, 'a full page');
  t.equal((await keysWritten(sql, runId, 100))?.length, 5 + deletes, 'the keys written, for the kept fingerprint table');

  // Crash recovery: every unlogged table of the run emptied at once, the tables kept.
  const tables = (await sql<{ name: string }[]>`select tablename as name from pg_tables where schemaname = ${STAGING_SCHEMA} and tablename = any(${Object.values(names)}::text[])`).map((r) => r.name);
  t.ok(tables.includes(names.intact) && tables.includes(names.stg) && (snapshot === 'empty' || tables.includes(names.plan)), `the run's tables: ${tables.join(', ')}`);
  await sql`truncate ${sql(tables.map((n) => `${STAGING_SCHEMA}.${n}`))}`;

  t.equal(await stagingIntact(sql, runId), false, 'a resumed run sees its staging lost');
  await t.rejects(readPending(sql, runId, 0, 100), StagingLostError, 'delivery does not take an emptied plan for its end');
  await t.rejects(readPending(sql, runId, 3, 100), StagingLostError, 'nor after some pages');
  await t.rejects(markDuplicates(sql, runId), StagingLostError, 'marking duplicates refuses emptied rows');
  await t.rejects(buildPlan(sql, runId, plan), StagingLostError, 'planning refuses emptied rows (a mirror plan would delete every record)');
  await t.rejects(keysWritten(sql, runId, 100), StagingLostError, 'the kept fingerprint table is not refreshed from emptied tables');

  // Read again: intact only once querying completes again.
  await createStaging(sql, runId);
  t.equal(await stagingIntact(sql, runId), false);
  await markStagingIntact(sql, runId);
  t.equal(await stagingIntact(sql, runId), true);
  await dropRunTables(sql, runId);
  const [{ n }] = await sql`select count(*)::int as n from pg_class where relnamespace = ${STAGING_SCHEMA}::regnamespace`;
  t.equal(n, 0, 'the run leaves no table, view or index behind');
});
}
