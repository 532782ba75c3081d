import type { Sql } from '../db/client.ts';
import { ConnectorError } from '../errors.ts';
import type { RowOutcome } from './batch.ts';
import { STAGING_SCHEMA, stagingNames } from './staging.ts';
import type { RunCounts } from './status.ts';

// Checkpointing: one transaction for one or more acknowledged batches — snapshot, run records
// (which also mark the plan operations done), counts. Never called twice at once for a run.
//
// Fencing: the transaction first locks the run row WHERE its attempts still equal this
// execution's lease and the sync still has the snapshot version the plan was built against. An
// execution that lost its run (another worker took it over) or whose sync was re-pointed
// writes nothing and stops (LeaseLostError / sync_repointed).
//
// The commit does not wait for the WAL flush (synchronous_commit off, this transaction only):
// a checkpoint lost to a crash of PostgreSQL itself loses the unlogged plan with it, and the run
// then re-plans from the snapshot and sends those rows again — at-least-once, never a row
// reported that was not delivered. A killed worker loses nothing: its commits are in the server.

export class LeaseLostError extends Error {
  constructor(runId: string) {
    super(`Run ${runId} is now executed elsewhere: this execution stops without writing.`);
  }
}

export interface CheckpointInput {
  sql: Sql;
  run: { id: string; workspaceId: string; syncId: string };
  /** runs.attempts of this execution. */
  lease: number;
  snapshotVersion: number;
  /** Insert-mode full resyncs re-insert records the snapshot has: their inserts need conflict handling. */
  insertsAreNew: boolean;
  /** No record was written against this plan before (its records need no conflict handling). */
  recordsFresh: boolean;
  group: { batch: number; outcomes: RowOutcome[] }[];
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
  const ok = { seqs: [] as number[], attempts: [] as number[], batches: [] as number[], ids: [] as (string | null)[] };
  const bad = { pks: [] as string[], ops: [] as string[], codes: [] as (string | null)[], messages: [] as (string | null)[], attempts: [] as number[], batches: [] as number[] };
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
        ok.attempts.push(o.attempts);
        ok.batches.push(batch);
        ok.ids.push(id);
      } else {
        counts.rejected[o.op.op]++;
        bad.pks.push(o.op.pk);
        bad.ops.push(o.op.op);
        bad.codes.push(o.code ?? null);
        bad.messages.push(o.message ? recordable(o.message.slice(0, 2000)) : null);
        bad.attempts.push(o.attempts);
        bad.batches.push(batch);
      }
    }
  }
  const onConflict = c.recordsFresh
    ? sql``
    : sql`on conflict (run_id, primary_key, operation) do update
        set status = excluded.status, error_code = excluded.error_code, error_message = excluded.error_message,
            attempts = run_records.attempts + excluded.attempts, batch = excluded.batch, record_id = excluded.record_id`;
  await sql.begin(async (tx) => {
    await tx`set local synchronous_commit = off`;
    // The fence, and the counts (the row lock also orders this against a competing execution).
    const fence = await tx<{ v: number | null }[]>`
      update runs r set counts = ${JSON.stringify(counts)}::jsonb, heartbeat_at = now()
      where r.id = ${run.id} and r.attempts = ${c.lease}
      returning (select s.snapshot_version from syncs s where s.id = r.sync_id) as v`;
    if (!fence.length) throw new LeaseLostError(run.id);
    if (fence[0].v !== c.snapshotVersion) {
      throw new ConnectorError('sync_repointed', "The sync's destination, object, match key or mode changed during the run; what was sent before the change is not recorded in the new snapshot.", {
        classification: 'fatal',
        hint: 'The next run writes every row to the new place.',
      });
    }
    // New records (the plan found no snapshot entry for their match key; only this run writes the sync's snapshot).
    if (okNew.seqs.length) {
      await tx`
        insert into sync_snapshots (sync_id, match_key, primary_key, hash, match_value, record_id, updated_at)
        select ${run.syncId}, pl.mkey, pl.pk, pl.hash, pl.match::jsonb, coalesce(u.id, pl.record_id), now()
        from unnest(${okNew.seqs}::bigint[], ${okNew.ids as string[]}::text[]) as u(seq, id) join ${p} pl on pl.seq = u.seq`;
    }
    if (okWrites.seqs.length) {
      await tx`
        insert into sync_snapshots (sync_id, match_key, primary_key, hash, match_value, record_id, updated_at)
        select ${run.syncId}, pl.mkey, pl.pk, pl.hash, pl.match::jsonb, coalesce(u.id, pl.record_id), now()
        from unnest(${okWrites.seqs}::bigint[], ${okWrites.ids as string[]}::text[]) as u(seq, id) join ${p} pl on pl.seq = u.seq
        on conflict (sync_id, match_key) do update
          set primary_key = excluded.primary_key, hash = excluded.hash, match_value = excluded.match_value,
              record_id = coalesce(excluded.record_id, sync_snapshots.record_id), updated_at = now()`;
    }
    if (okDeletes.length) {
      await tx`
        delete from sync_snapshots n using ${p} pl
        where pl.seq = any(${okDeletes}::bigint[]) and n.sync_id = ${run.syncId} and n.match_key = pl.mkey`;
    }
    if (ok.seqs.length) {
      await tx`
        insert into run_records (run_id, workspace_id, sync_id, primary_key, operation, status, attempts, batch, record_id)
        select ${run.id}, ${run.workspaceId}, ${run.syncId}, pl.pk, pl.op, 'succeeded', u.attempts, u.batch, coalesce(u.id, pl.record_id)
        from unnest(${ok.seqs}::bigint[], ${ok.attempts}::int[], ${ok.batches}::int[], ${ok.ids as string[]}::text[]) as u(seq, attempts, batch, id)
        join ${p} pl on pl.seq = u.seq
        ${onConflict}`;
    }
    if (bad.pks.length) {
      await tx`
        insert into run_records (run_id, workspace_id, sync_id, primary_key, operation, status, error_code, error_message, attempts, batch)
        select ${run.id}, ${run.workspaceId}, ${run.syncId}, r.pk, r.op, 'rejected', r.code, r.message, r.attempts, r.batch
        from unnest(${bad.pks}::text[], ${bad.ops}::text[], ${bad.codes as string[]}::text[], ${bad.messages as string[]}::text[],
                    ${bad.attempts}::int[], ${bad.batches}::int[]) as r(pk, op, code, message, attempts, batch)
        ${onConflict}`;
    }
  });
  // Counts change only once the transaction committed.
  Object.assign(c.counts, counts);
}

/** A destination's message as the control database can store it (no NUL, no lone surrogates). */
function recordable(s: string): string {
  return s.replace(/\0/g, '\\u0000').toWellFormed();
}
