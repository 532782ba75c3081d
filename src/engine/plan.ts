import type { Sql } from '../db/client.ts';
import { STAGING_SCHEMA, stagingNames } from './staging.ts';

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
 * The next pending operations after `afterSeq` (keyset; in-flight ones are never read twice).
 * An operation is done once a checkpoint wrote its run record. A plan built in this execution
 * has none done beyond the keyset, so it is read by seq alone; a plan resumed after a crash
 * (`resumeAfterBatch` set) skips the operations that have a record written against it.
 */
export async function readPending(sql: Sql, runId: string, afterSeq: number, limit: number, resumeAfterBatch?: number): Promise<PlannedOp[]> {
  const { plan } = stagingNames(runId);
  const p = sql`${sql(STAGING_SCHEMA)}.${sql(plan)}`;
  type R = { seq: string; pk: string; op: PlannedOp['op']; payload: string; attempts: number; record_id: string | null };
  const rows =
    resumeAfterBatch === undefined
      ? await sql<R[]>`
          select seq, pk, op, payload, attempts, record_id from ${p}
          where seq > ${afterSeq} order by seq limit ${limit}`
      : await sql<R[]>`
          select seq, pk, op, payload, attempts, record_id from ${p} pl
          where seq > ${afterSeq}
            and not exists (select 1 from run_records r
                            where r.run_id = ${runId} and r.primary_key = pl.pk and r.operation = pl.op and r.batch > ${resumeAfterBatch})
          order by seq limit ${limit}`;
  return rows.map((r) => ({ seq: Number(r.seq), pk: r.pk, op: r.op, payload: r.payload, attempts: r.attempts, recordId: r.record_id }));
}
