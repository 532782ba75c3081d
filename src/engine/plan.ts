import type { Sql } from '../db/client.ts';
import { analyzeStaging, assertStagingIntact, STAGING_SCHEMA, stagingNames } from './staging.ts';

// The plan table of a run (built by diff.ts): its size, and the pending operations in seq order.

export async function planSize(sql: Sql, runId: string): Promise<number> {
  const { plan } = stagingNames(runId);
  const [r] = await sql<{ n: number }[]>`select count(*)::int as n from ${sql(STAGING_SCHEMA)}.${sql(plan)}`;
  return r.n;
}

export interface PlannedOp {
  seq: number;
  pk: string;
  op: 'insert' | 'update' | 'delete';
  payload: string;
  attempts: number;
  /** The destination's id of the record, when the snapshot knows it. */
  recordId: string | null;
}

/** The batch number recorded when the plan was built (records above it were written against it). */
export async function planBaseBatch(sql: Sql, runId: string): Promise<number> {
  const [r] = await sql<{ d: string | null }[]>`select obj_description(to_regclass(${`${STAGING_SCHEMA}.${stagingNames(runId).plan}`}), 'pg_class') as d`;
  const m = /base_batch=(\d+)/.exec(r?.d ?? '');
  return m ? Number(m[1]) : 0;
}

/**
 * Collects into done_<run> the operations recorded against a resumed plan (records of batches
 * after `afterBatch`, in run_records or run_batches), once per execution, so that readPending
 * skips them by key. Returns how many there are.
 */
export async function collectDone(sql: Sql, runId: string, afterBatch: number): Promise<number> {
  const d = sql`${sql(STAGING_SCHEMA)}.${sql(stagingNames(runId).done)}`;
  await sql`drop table if exists ${d}`;
  await sql`
    create unlogged table ${d} as
    select primary_key as pk, operation as op from run_records where run_id = ${runId} and batch > ${afterBatch}
    union all
    select u.pk, b.operation from run_batches b cross join lateral unnest(b.primary_keys) as u(pk) where b.run_id = ${runId} and b.batch > ${afterBatch}`;
  await sql`create index on ${d} (pk, op)`;
  await analyzeStaging(sql, stagingNames(runId).done);
  const [r] = await sql<{ n: number }[]>`select count(*)::int as n from ${d}`;
  return r.n;
}

/** A page of the plan, with the state of its run read in the same statement. */
export interface PlanPage {
  /** `gone`: the run row was deleted (with its sync); `cancelled`: a cancel was requested. */
  run: 'running' | 'cancelled' | 'gone';
  ops: PlannedOp[];
}

/**
 * The next pending operations after `afterSeq` (keyset; in-flight ones are never read twice),
 * and whether the run is still wanted — one round trip per page. An operation is done once a
 * checkpoint recorded its outcome. A plan built in this execution has none done beyond the
 * keyset, so it is read by seq alone; a plan resumed after a crash (`resumed`: collectDone ran)
 * skips the operations recorded against it. Throws StagingLostError when a page comes back
 * short because PostgreSQL emptied the plan.
 */
export async function readPending(sql: Sql, runId: string, afterSeq: number, limit: number, resumed = false): Promise<PlanPage> {
  const { plan, done } = stagingNames(runId);
  const p = sql`${sql(STAGING_SCHEMA)}.${sql(plan)}`;
  type R = { run: 'running' | 'cancelled' | 'gone'; seq: string | null; pk: string; op: PlannedOp['op']; payload: string; attempts: number; record_id: string | null };
  const pending = !resumed
    ? sql`select seq, pk, op, payload, attempts, record_id from ${p} where seq > ${afterSeq} order by seq limit ${limit}`
    : sql`select seq, pk, op, payload, attempts, record_id from ${p} pl
          where seq > ${afterSeq}
            and not exists (select 1 from ${sql(STAGING_SCHEMA)}.${sql(done)} d where d.pk = pl.pk and d.op = pl.op)
          order by seq limit ${limit}`;
  // One row with null columns when no operation is read; the run's state on every row.
  const rows = await sql<R[]>`
    select case when r.id is null then 'gone' when r.cancel_requested_at is not null then 'cancelled' else 'running' end as run, pl.*
    from (select) one
    left join runs r on r.id = ${runId}
    left join lateral (${pending}) pl on true`;
  const state = rows[0].run;
  const found = rows[0].seq === null ? [] : rows;
  // The nested loop over one run row returns the page in its own order; a sort in SQL would copy
  // every payload once more. Checked, not assumed.
  for (let i = 1; i < found.length; i++) {
    if (Number(found[i - 1].seq) > Number(found[i].seq)) {
      found.sort((a, b) => Number(a.seq) - Number(b.seq));
      break;
    }
  }
  // A short page ends the plan only if the plan is still what it was: a crash or failover of
  // PostgreSQL empties it, and delivery would then end early and call the run done.
  if (found.length < limit) await assertStagingIntact(sql, runId);
  return { run: state, ops: found.map((r) => ({ seq: Number(r.seq), pk: r.pk, op: r.op, payload: r.payload, attempts: r.attempts, recordId: r.record_id })) };
}
