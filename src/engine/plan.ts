import type { Sql } from '../db/client.ts';
import type { SyncModeT } from '../domain/syncs.ts';
import { STAGING_SCHEMA, stagingNames } from './staging.ts';
import type { OpCounts } from './status.ts';

// Diffing: set-based SQL from the staged rows and the sync's snapshot to the plan, in hashed
// passes without sorting (a million-row run spent most of its diff sorting and indexing).
//   insert  staged, not in snapshot              (all modes but update, which sends them as updates)
//   update  staged, in snapshot, hash changed    (not in insert mode)
//   delete  in snapshot, not staged at all       (mirror mode only; invalid rows count as staged)
// A full resync ignores the hash: every valid row is planned again.

export async function markDuplicates(sql: Sql, runId: string): Promise<string[]> {
  const { stg } = stagingNames(runId);
  const t = sql`${sql(STAGING_SCHEMA)}.${sql(stg)}`;
  // Statistics for the planner (a fresh table has none): hash joins and aggregates, no sorts.
  await sql`analyze ${t}`;
  return sql.begin(async (tx) => {
    await tx`set local work_mem = '64MB'`;
    // One hashed pass finds the duplicated keys (usually none); only those rows are rewritten.
    const dups = await tx<{ pk: string }[]>`select pk from ${t} group by pk having count(*) > 1`;
    if (!dups.length) return [];
    const pks = dups.map((d) => d.pk);
    await tx`update ${t} set state = 'd' where pk = any(${pks}::text[]) and state <> 'd'`;
    return pks;
  });
}

export async function buildPlan(
  sql: Sql,
  runId: string,
  opts: { syncId: string; mode: SyncModeT; fullResync: boolean; matchField: string; baseBatch?: number },
): Promise<{ planned: OpCounts; total: number }> {
  const { stg, plan } = stagingNames(runId);
  const s = sql`${sql(STAGING_SCHEMA)}.${sql(stg)}`;
  const p = sql`${sql(STAGING_SCHEMA)}.${sql(plan)}`;
  await sql`drop table if exists ${p}`;
  await sql`create unlogged table ${p} (
    seq bigserial primary key, pk text not null, op text not null, hash text, payload text, match text,
    state char(1) not null default 'p', attempts int not null default 0)`;
  // Records of batches numbered above this were written against this plan (see readPending).
  await sql`comment on table ${p} is ${sql.unsafe(`'base_batch=${Math.max(0, Math.floor(opts.baseBatch ?? 0))}'`)}`;

  // A run staged by an earlier version has no match column: derive it from the payload.
  await sql`alter table ${s} add column if not exists match text`;
  const match = sql`coalesce(st.match, (st.payload::jsonb -> ${opts.matchField}::text)::text)`;

  const full = opts.fullResync;
  const { mode } = opts;
  await sql.begin(async (tx) => {
    await tx`set local work_mem = '64MB'`;
    // Inserts and updates in one pass over the staged rows, hash-joined to the snapshot; no order
    // is imposed (batches are cut by wire operation, and upsert sends both as one).
    //   not in snapshot: insert (update mode: update, sent by match key)
    //   in snapshot:     update when the hash changed or on a full resync (insert mode: a full resync re-inserts)
    await tx`
      insert into ${p} (pk, op, hash, payload, match)
      select st.pk, case when n.primary_key is null and ${mode !== 'update'} then 'insert'
                         when n.primary_key is not null and ${mode === 'insert'} then 'insert'
                         else 'update' end,
             st.hash, st.payload, ${match}
      from ${s} st
      left join sync_snapshots n on n.sync_id = ${opts.syncId} and n.primary_key = st.pk
      where st.state = 'v'
        and case when n.primary_key is null then true
                 when ${mode === 'insert'} then ${full}
                 else ${full} or n.hash is distinct from st.hash end`;
    if (mode === 'mirror') {
      await tx`
        insert into ${p} (pk, op, hash, payload, match)
        select n.primary_key, 'delete', null, json_build_object(${opts.matchField}::text, n.match_value)::text, n.match_value::text
        from sync_snapshots n
        where n.sync_id = ${opts.syncId}
          and not exists (select 1 from ${s} st where st.pk = n.primary_key)`;
    }
  });
  const rows = await sql<{ op: keyof OpCounts; n: number }[]>`select op, count(*)::int as n from ${p} group by op`;
  const planned: OpCounts = { insert: 0, update: 0, delete: 0 };
  for (const r of rows) planned[r.op] = r.n;
  return { planned, total: planned.insert + planned.update + planned.delete };
}

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
  const rows =
    resumeAfterBatch === undefined
      ? await sql<{ seq: string; pk: string; op: PlannedOp['op']; payload: string; attempts: number }[]>`
          select seq, pk, op, payload, attempts from ${p}
          where seq > ${afterSeq} order by seq limit ${limit}`
      : await sql<{ seq: string; pk: string; op: PlannedOp['op']; payload: string; attempts: number }[]>`
          select seq, pk, op, payload, attempts from ${p} pl
          where seq > ${afterSeq}
            and not exists (select 1 from run_records r
                            where r.run_id = ${runId} and r.primary_key = pl.pk and r.operation = pl.op and r.batch > ${resumeAfterBatch})
          order by seq limit ${limit}`;
  return rows.map((r) => ({ ...r, seq: Number(r.seq) }));
}
