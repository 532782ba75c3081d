import type { Sql } from '../db/client.ts';
import type { SyncModeT } from '../domain/syncs.ts';
import { STAGING_SCHEMA, stagingNames } from './staging.ts';
import type { OpCounts } from './status.ts';

// Diffing: set-based SQL from the staged rows and the sync's snapshot to the plan.
//   insert  staged, not in snapshot              (all modes but update... which sends them as updates)
//   update  staged, in snapshot, hash changed    (not in insert mode)
//   delete  in snapshot, not staged at all       (mirror mode only; invalid rows count as staged)
// A full resync ignores the hash: every valid row is planned again.

export async function markDuplicates(sql: Sql, runId: string): Promise<string[]> {
  const { stg } = stagingNames(runId);
  const t = sql`${sql(STAGING_SCHEMA)}.${sql(stg)}`;
  await sql`create index on ${t} (pk)`;
  const dups = await sql<{ pk: string }[]>`
    update ${t} set state = 'd'
    where pk in (select pk from ${t} group by pk having count(*) > 1) and state <> 'd'
    returning pk`;
  return [...new Set(dups.map((d) => d.pk))];
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
  // Rows new to the destination (a full resync in insert mode re-inserts every row).
  if (opts.mode !== 'update') {
    await sql`
      insert into ${p} (pk, op, hash, payload, match)
      select st.pk, 'insert', st.hash, st.payload, ${match}
      from ${s} st
      where st.state = 'v'
        and (${full && opts.mode === 'insert'}
             or not exists (select 1 from sync_snapshots n where n.sync_id = ${opts.syncId} and n.primary_key = st.pk))
      order by st.pk`;
  }
  if (opts.mode !== 'insert') {
    await sql`
      insert into ${p} (pk, op, hash, payload, match)
      select st.pk, 'update', st.hash, st.payload, ${match}
      from ${s} st
      left join sync_snapshots n on n.sync_id = ${opts.syncId} and n.primary_key = st.pk
      where st.state = 'v'
        and (
          (n.primary_key is not null and (${full} or n.hash is distinct from st.hash))
          or (${opts.mode === 'update'} and n.primary_key is null)
        )
      order by st.pk`;
  }
  if (opts.mode === 'mirror') {
    await sql`
      insert into ${p} (pk, op, hash, payload, match)
      select n.primary_key, 'delete', null, json_build_object(${opts.matchField}::text, n.match_value)::text, n.match_value::text
      from sync_snapshots n
      where n.sync_id = ${opts.syncId}
        and not exists (select 1 from ${s} st where st.pk = n.primary_key)
      order by n.primary_key`;
  }
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
