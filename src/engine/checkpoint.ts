import postgres from 'postgres';
import { intArray, textArray } from '../db/arrays.ts';
import { isConnectionError, type Sql } from '../db/client.ts';
import { ConnectorError } from '../errors.ts';
import type { RowOutcome } from './batch.ts';
import { intactSql, STAGING_SCHEMA, StagingLostError, stagingNames } from './staging.ts';
import type { RunCounts } from './status.ts';

// Checkpointing: one statement (hence one transaction and one round trip) for one or more
// acknowledged batches — snapshot, run records (which also mark the plan operations done),
// counts. Never called twice at once for a run.
//
// Fencing: the statement locks the run row WHERE its attempts still equal this execution's lease
// and checks that the sync still has the snapshot version the plan was built against, and that
// the plan was not emptied by a crash of PostgreSQL (staging.ts, markStagingIntact). An
// execution that lost its run (another worker took it over) or whose sync was re-pointed writes
// nothing (the statement raises and rolls back) and stops (LeaseLostError / sync_repointed).
//
// The commit does not wait for the WAL flush (synchronous_commit off, this transaction only):
// a checkpoint lost to a crash of PostgreSQL itself loses the unlogged plan with it (crash
// recovery empties unlogged tables), and the run then reads the model again, re-plans against
// the snapshot and sends those rows again — at-least-once, never a row reported that was not
// delivered. A killed worker loses nothing: its commits are in the server.
//
// Each batch was registered in run_inflight before it was sent (registerInflight, or the
// checkpoint that freed its slot: CheckpointInput.register); the checkpoint deletes those rows. That makes a checkpoint safe to retry when the connection dropped before
// its commit was acknowledged: finding its batches already gone, it knows it committed. Rows an
// earlier execution sent without recording them are marked `redelivered` (RowOutcome.priorSends).

export class LeaseLostError extends Error {
  constructor(runId: string) {
    super(`Run ${runId} is now executed elsewhere: this execution stops without writing.`);
  }
}

/** The prefix of the error a checkpoint raises to roll itself back, followed by the reason. */
const REFUSED = 'backhaul checkpoint refused: ';

export interface CheckpointInput {
  sql: Sql;
  run: { id: string; workspaceId: string; syncId: string };
  /** runs.attempts of this execution. */
  lease: number;
  snapshotVersion: number;
  /** Insert-mode full resyncs re-insert records the snapshot has: their inserts need conflict handling. */
  insertsAreNew: boolean;
  /**
   * No record was written against this plan before: its records need no conflict handling, and
   * its successes are recorded in bulk (run_batches; a plan rebuilt mid-run records them by row).
   */
  recordsFresh: boolean;
  group: { batch: number; outcomes: RowOutcome[] }[];
  /**
   * Batches this statement registers as sent (see registerInflight): those that take the slots
   * this group frees, so that they leave without a registration round trip of their own.
   */
  register?: readonly InflightBatch[];
  /** Updated in place with this group's outcomes, and written with it. */
  counts: RunCounts;
}

export async function checkpoint(c: CheckpointInput): Promise<void> {
  const { sql, run } = c;
  const { plan } = stagingNames(run.id);
  const p = sql`${sql(STAGING_SCHEMA)}.${sql(plan)}`;
  const okNew = { seqs: [] as number[], ids: [] as (string | null)[] };
  const okWrites = { seqs: [] as number[], ids: [] as (string | null)[] };
  const okDeletes: number[] = [];
  const ok = { seqs: [] as number[], attempts: [] as number[], batches: [] as number[], ids: [] as (string | null)[], again: [] as number[] };
  const bad = {
    pks: [] as string[],
    ops: [] as string[],
    codes: [] as (string | null)[],
    messages: [] as (string | null)[],
    attempts: [] as number[],
    batches: [] as number[],
    again: [] as number[],
  };
  const counts: RunCounts = structuredClone(c.counts);
  for (const { batch, outcomes } of c.group) {
    for (const o of outcomes) {
      if (o.status === 'succeeded') {
        counts.succeeded[o.op.op]++;
        const id = o.externalId ?? null;
        if (o.op.op === 'delete') okDeletes.push(o.op.seq);
        else if (o.op.op === 'insert' && c.insertsAreNew) (okNew.seqs.push(o.op.seq), okNew.ids.push(id));
        else (okWrites.seqs.push(o.op.seq), okWrites.ids.push(id));
        ok.seqs.push(o.op.seq);
        ok.attempts.push(o.attempts + (o.priorSends ?? 0));
        ok.batches.push(batch);
        ok.ids.push(id);
        ok.again.push((o.priorSends ?? 0) > 0 ? 1 : 0);
      } else {
        counts.rejected[o.op.op]++;
        bad.pks.push(o.op.pk);
        bad.ops.push(o.op.op);
        bad.codes.push(o.code ?? null);
        bad.messages.push(o.message ? recordable(o.message.slice(0, 2000)) : null);
        bad.attempts.push(o.attempts + (o.priorSends ?? 0));
        bad.batches.push(batch);
        bad.again.push((o.priorSends ?? 0) > 0 ? 1 : 0);
      }
    }
  }
  const onConflict = c.recordsFresh
    ? sql``
    : sql`on conflict (run_id, primary_key, operation) do update
        set status = excluded.status, error_code = excluded.error_code, error_message = excluded.error_message,
            attempts = run_records.attempts + excluded.attempts, batch = excluded.batch, record_id = excluded.record_id,
            redelivered = run_records.redelivered or excluded.redelivered`;
  const batches = c.group.map((g) => g.batch);
  // One statement, hence one transaction and one round trip (data-modifying CTEs, all run to
  // completion on one snapshot). Its last part checks the fence and the registrations; when
  // one fails, a cast of the reason to an integer raises and everything rolls back.
  const writes: ReturnType<Sql>[] = [];
  // New records (the plan found no snapshot entry for their match key; only this run writes the sync's snapshot).
  if (okNew.seqs.length) {
    writes.push(sql`
      insert into sync_snapshots (sync_id, match_key, primary_key, hash, match_value, record_id, source_fp, updated_at)
      select ${run.syncId}, pl.mkey, pl.pk, pl.hash, pl.match::jsonb, coalesce(u.id, pl.record_id), pl.fp, now()
      from unnest(${intArray(sql, okNew.seqs, 'bigint')}, ${textArray(sql, okNew.ids)}) as u(seq, id) join ${p} pl on pl.seq = u.seq`);
  }
  if (okWrites.seqs.length) {
    writes.push(sql`
      insert into sync_snapshots (sync_id, match_key, primary_key, hash, match_value, record_id, source_fp, updated_at)
      select ${run.syncId}, pl.mkey, pl.pk, pl.hash, pl.match::jsonb, coalesce(u.id, pl.record_id), pl.fp, now()
      from unnest(${intArray(sql, okWrites.seqs, 'bigint')}, ${textArray(sql, okWrites.ids)}) as u(seq, id) join ${p} pl on pl.seq = u.seq
      on conflict (sync_id, match_key) do update
        set primary_key = excluded.primary_key, hash = excluded.hash, match_value = excluded.match_value, source_fp = excluded.source_fp,
            record_id = coalesce(excluded.record_id, sync_snapshots.record_id), updated_at = now()`);
  }
  if (okDeletes.length) {
    writes.push(sql`
      delete from sync_snapshots n using ${p} pl
      where pl.seq = any(${intArray(sql, okDeletes, 'bigint')}) and n.sync_id = ${run.syncId} and n.match_key = pl.mkey`);
  }
  if (c.recordsFresh) {
    // Success in bulk: one run_batches row per batch (see the table's comment in src/db/schema.ts).
    for (const { batch, outcomes } of c.group) {
      // A batch carries one operation (splitBatches); grouped anyway, since the row is per (batch, operation).
      const byOp = Map.groupBy(outcomes.filter((o) => o.status === 'succeeded'), (o) => o.op.op);
      for (const okOnes of byOp.values()) {
      const ids = okOnes.map((o) => o.externalId ?? o.op.recordId ?? null);
      const attempts = okOnes.map((o) => o.attempts + (o.priorSends ?? 0));
      const again = okOnes.map((o) => (o.priorSends ?? 0) > 0);
      writes.push(sql`
        insert into run_batches (run_id, batch, operation, workspace_id, sync_id, primary_keys, record_ids, attempts, redelivered)
        values (${run.id}, ${batch}, ${okOnes[0].op.op}, ${run.workspaceId}, ${run.syncId}, ${textArray(sql, okOnes.map((o) => o.op.pk))},
                ${ids.some((i) => i !== null) ? textArray(sql, ids) : null},
                ${attempts.some((a) => a !== 1) ? intArray(sql, attempts) : null},
                ${again.some(Boolean) ? sql`string_to_array(${again.map((a) => (a ? 't' : 'f')).join(',')}, ',')::boolean[]` : null})`);
      }
    }
  } else if (ok.seqs.length) {
    writes.push(sql`
      insert into run_records (run_id, workspace_id, sync_id, primary_key, operation, status, attempts, batch, record_id, redelivered)
      select ${run.id}, ${run.workspaceId}, ${run.syncId}, pl.pk, pl.op, 'succeeded', u.attempts, u.batch, coalesce(u.id, pl.record_id), u.again <> 0
      from unnest(${intArray(sql, ok.seqs, 'bigint')}, ${intArray(sql, ok.attempts)}, ${intArray(sql, ok.batches)}, ${textArray(sql, ok.ids)}, ${intArray(sql, ok.again)})
           as u(seq, attempts, batch, id, again)
      join ${p} pl on pl.seq = u.seq
      ${onConflict}`);
  }
  if (bad.pks.length) {
    writes.push(sql`
      insert into run_records (run_id, workspace_id, sync_id, primary_key, operation, status, error_code, error_message, attempts, batch, redelivered)
      select ${run.id}, ${run.workspaceId}, ${run.syncId}, r.pk, r.op, 'rejected', r.code, r.message, r.attempts, r.batch, r.again <> 0
      from unnest(${bad.pks}::text[], ${bad.ops}::text[], ${bad.codes as string[]}::text[], ${bad.messages as string[]}::text[],
                  ${bad.attempts}::int[], ${bad.batches}::int[], ${bad.again}::int[]) as r(pk, op, code, message, attempts, batch, again)
      ${onConflict}`);
  }
  // Fenced like the other writes: the statement rolls back as a whole when the fence refuses.
  if (c.register?.length) writes.push(sql`insert into run_inflight (run_id, lease, batch, primary_keys) ${inflightRows(sql, c.register, c.lease)} where r.id = ${run.id} on conflict do nothing`);
  const ctes = writes.map((w, i) => sql`, ${sql(`w${i}`)} as (${w})`);
  try {
    await sql`
      with async as (select set_config('synchronous_commit', 'off', true)),
      -- The fence, and the counts (the row lock also orders this against a competing execution).
      fence as (
        update runs r set counts = ${JSON.stringify(counts)}::jsonb, heartbeat_at = now() from async
        where r.id = ${run.id} and r.attempts = ${c.lease}
        returning (select s.snapshot_version from syncs s where s.id = r.sync_id) as v),
      -- The batches' registrations go with their outcomes. None left: an earlier attempt of this
      -- checkpoint committed and only its answer was lost (the connection dropped).
      sent as (delete from run_inflight where run_id = ${run.id} and lease = ${c.lease} and batch = any(${batches}::int[]) returning 1)
      ${ctes}
      select case when o.outcome = 'ok' then 0 else (${REFUSED} || o.outcome)::int end as refused from (
        select case when not exists (select 1 from fence) then 'lease_lost'
                    when (select v from fence) is distinct from ${c.snapshotVersion}::int then 'sync_repointed'
                    when not ${intactSql(sql, run.id)} then 'staging_lost'
                    when (select count(*) from sent) = 0 then 'already_checkpointed'
                    when (select count(*) from sent) <> ${batches.length} then 'unregistered'
                    else 'ok' end as outcome) o`;
  } catch (e) {
    if (!(e instanceof postgres.PostgresError) || isConnectionError(e)) throw e;
    const reason = e.message.includes(REFUSED) ? e.message.slice(e.message.indexOf(REFUSED) + REFUSED.length).replace(/\W+$/, '') : undefined;
    // A statement refused for another reason (a record an earlier attempt or a takeover wrote)
    // may hide a lost lease: that answer comes first.
    if (reason === 'lease_lost' || reason === undefined) {
      const [cur] = await sql<{ attempts: number }[]>`select attempts from runs where id = ${run.id}`;
      if (!cur || cur.attempts !== c.lease) throw new LeaseLostError(run.id);
    }
    if (reason === 'sync_repointed') {
      throw new ConnectorError('sync_repointed', "The sync's destination, object, match key or mode changed during the run; what was sent before the change is not recorded in the new snapshot.", {
        classification: 'fatal',
        hint: 'The next run writes every row to the new place.',
      });
    }
    // The plan was emptied by a crash or failover of PostgreSQL: its snapshot writes (joined to
    // the plan) would be lost. The batch stays registered as sent; the run reads the model again.
    if (reason === 'staging_lost') throw new StagingLostError(run.id);
    if (reason === 'unregistered') throw new Error(`checkpoint of run ${run.id}: some of its ${batches.length} batches were not registered as sent`);
    if (reason !== 'already_checkpointed') throw e;
  }
  // Counts change only once the transaction committed.
  Object.assign(c.counts, counts);
}

/**
 * Registers batches as sent before their requests leave (see run_inflight), if this execution
 * still holds the run: the insert takes the run row's key-share lock where `attempts` still
 * equals the lease, so it is ordered against a takeover's claim (which locks the row FOR UPDATE,
 * RunState.claim) — either the claim sees these batches, or this execution sees it lost the run
 * and sends nothing (LeaseLostError). Key share, not share: it does not wait for this execution's
 * own checkpoint or heartbeat (plain updates of non-key columns), so a batch leaves while the
 * batches before it are being checkpointed. One statement for all `batches` (deliver.ts groups
 * the batches that start while a registration is in flight). Safe to repeat.
 *
 * @param batches batch numbers with the primary keys each carries (in send order)
 * @throws LeaseLostError when another execution holds the run; ConnectorError `sync_deleted`
 */
export async function registerInflight(sql: Sql, runId: string, lease: number, batches: readonly InflightBatch[]): Promise<void> {
  if (!batches.length) return;
  // Committed without waiting for the WAL flush, like the checkpoints (set_config is local to this
  // statement's transaction): a killed worker loses nothing, the server has the commit. Only a
  // crash of PostgreSQL itself within the WAL writer's delay (under a second) can lose it, and
  // that crash loses the unlogged plan too: the run re-plans and re-sends what it cannot prove
  // was delivered.
  const rows = await sql`
    with async as (select set_config('synchronous_commit', 'off', true))
    insert into run_inflight (run_id, lease, batch, primary_keys)
    ${inflightRows(sql, batches, lease)}, async
    where r.id = ${runId} and r.attempts = ${lease} for key share of r
    on conflict do nothing
    returning 1`;
  if (rows.length) return;
  const [cur] = await sql<{ attempts: number }[]>`select attempts from runs where id = ${runId}`;
  if (!cur) throw new ConnectorError('sync_deleted', 'The sync was deleted during the run.', { classification: 'fatal' });
  if (cur.attempts !== lease) throw new LeaseLostError(runId);
  // Registered already: an earlier attempt of this statement committed.
}

/**
 * Withdraws the registration of a batch that was registered (by a checkpoint, for the slot it
 * freed) but will not be sent because delivery is stopping: a later execution must not mark its
 * rows redelivered.
 */
export async function withdrawInflight(sql: Sql, runId: string, lease: number, batch: number): Promise<void> {
  await sql`delete from run_inflight where run_id = ${runId} and lease = ${lease} and batch = ${batch}`;
}

/** A batch about to be sent: its number and the primary keys it carries (in send order). */
export interface InflightBatch {
  batch: number;
  primaryKeys: readonly string[];
}

/**
 * `select r.id, lease, batch, keys from runs r, …`: run_inflight rows for `batches`, with the
 * run row as `r` for the caller's WHERE. Every batch's keys travel in one array, each batch a
 * slice of it [lo:hi] (1-based, inclusive).
 */
function inflightRows(sql: Sql, batches: readonly InflightBatch[], lease: number) {
  const los: number[] = [];
  const his: number[] = [];
  const keys: string[] = [];
  for (const b of batches) {
    los.push(keys.length + 1);
    for (const k of b.primaryKeys) keys.push(k);
    his.push(keys.length);
  }
  return sql`
    select r.id, ${lease}::int, b.batch, k.a[b.lo:b.hi]
    from runs r, (select ${textArray(sql, keys)} as a) k,
         unnest(${intArray(sql, batches.map((b) => b.batch))}, ${intArray(sql, los)}, ${intArray(sql, his)}) as b(batch, lo, hi)`;
}

/**
 * Rows that earlier executions of the run sent without recording their outcome, with how many
 * times: primary key → sends.
 */
export async function priorSends(sql: Sql, runId: string, lease: number): Promise<Map<string, number>> {
  const rows = await sql<{ pk: string; n: number }[]>`
    select pk, count(*)::int as n from run_inflight i, unnest(i.primary_keys) as pk
    where i.run_id = ${runId} and i.lease <> ${lease}
    group by pk`;
  return new Map(rows.map((r) => [r.pk, r.n]));
}

/** SQL for the highest batch number with a recorded outcome in the run (null when none). */
export function lastRecordedBatch(sql: Sql, runId: string) {
  return sql`greatest((select max(batch) from run_records where run_id = ${runId}), (select max(batch) from run_batches where run_id = ${runId}))`;
}

/** A destination's message as the control database can store it (no NUL, no lone surrogates). */
function recordable(s: string): string {
  return s.replace(/\0/g, '\\u0000').toWellFormed();
}
