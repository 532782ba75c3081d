import type { Sql } from '../db/client.ts';

/**
 * Deletes graphile-worker's job queue rows that have no job left; returns how many.
 *
 * Runs use one named queue per sync (`sync:<id>`), and graphile-worker keeps a queue's row after
 * its last job. A job fetch that meets an available job in a named queue locks every unlocked
 * queue row (FOR UPDATE, a WAL record each): with 1,000 syncs such a fetch locked ~1,000 rows,
 * ~54 kB of WAL and 2.5x the time of the same fetch with a handful of queues.
 *
 * Racing add_job safely: add_job makes sure the queue row exists, then inserts the job with
 * that row's id (there is no foreign key: a job whose queue row is deleted is never fetched,
 * and one inserted after it is gone runs outside its queue). Both statements hold ROW EXCLUSIVE
 * on the queue table until their transaction ends, which the SHARE lock here waits for, so a job
 * being added is always visible to the delete; and an add_job that comes meanwhile waits for this
 * transaction, then takes its snapshot after the lock, so it sees a deleted row as gone and
 * creates it again. The lock_timeout keeps the wait (and the add_jobs queued behind it) short:
 * a busy moment just skips this pass (the caller logs and retries on its next sweep).
 *
 * `sql` is the pool (one round trip: a multi-statement simple query runs as one implicit
 * transaction) or a transaction.
 */
export async function gcJobQueues(sql: Pick<Sql, 'unsafe'>): Promise<number> {
  const results = (await sql.unsafe(`
    set local lock_timeout = '200ms';
    lock table graphile_worker._private_job_queues in share mode;
    with deleted as (
      delete from graphile_worker._private_job_queues q
      where q.locked_at is null
        and not exists (select 1 from graphile_worker._private_jobs j where j.job_queue_id = q.id)
      returning 1)
    select count(*)::int as n from deleted`)) as unknown as unknown[];
  const rows = (Array.isArray(results[0]) ? results.at(-1) : results) as { n: number }[];
  return rows[0]?.n ?? 0;
}

/** Bump when a function or trigger below changes: a worker starting finds an older one and replaces it. */
const QUEUE_WAKE_VERSION = 2;

/**
 * Installs (once per version) two triggers on graphile-worker's tables so that a job waiting in a
 * named queue starts as soon as the queue is released, not at a worker's next poll. Idempotent;
 * run after graphile-worker's migrations.
 *
 * Why: a sync's runs share the job queue `sync:<id>`. A run triggered while the sync's previous
 * run still holds the queue is inserted, and its NOTIFY finds the queue locked; graphile-worker
 * 0.18 completes a job without awaiting it and looks for its next job at once (dist/worker.js),
 * so when that look comes before the completion commits, the waiting run was found only at the
 * next poll (`pollInterval`, 1 s): the trigger-to-start p95 of back-to-back runs was 684–816 ms
 * against a median of 8–27 ms.
 *
 * - `backhaul_job_queue_wake`, after a queue is released (complete, fail, force_unlock_workers,
 *   this worker's sweeps): when a job waits in it, `pg_notify('jobs:insert')`, graphile-worker's
 *   own channel and payload, delivered when the release commits. A queue emptied by its last
 *   job sends nothing.
 * - `backhaul_job_queue_enter`, before a job is inserted into a named queue: takes the queue's
 *   row FOR SHARE. A release still uncommitted (its wake saw no job) then commits before the
 *   insert does, so the insert's own NOTIFY finds the queue free; an insert that locks first makes
 *   the release wait, and the release's wake then sees the job. Without it, a release checked,
 *   an insert committed and notified (queue still locked), then the release committed: no wake.
 *   The share lock conflicts only with a release or lock of that queue (a job fetch skips it).
 *
 * Both live on graphile-worker's private tables (schema revision 11 onwards, 0.18): an upgrade
 * that recreates a table drops its trigger, and the next start installs it again.
 */
export async function installQueueWake(sql: Sql): Promise<void> {
  await sql.begin(async (tx) => {
    // Workers starting together: one installs, the others then find it.
    await tx`select pg_advisory_xact_lock(hashtext('backhaul_job_queue_wake'))`;
    const found = await tx<{ version: string | null }[]>`
      select obj_description(p.oid, 'pg_proc') as version
      from pg_trigger t join pg_proc p on p.oid = t.tgfoid
      where t.tgname in ('backhaul_job_queue_wake', 'backhaul_job_queue_enter')
        and t.tgrelid in ('graphile_worker._private_job_queues'::regclass, 'graphile_worker._private_jobs'::regclass)`;
    if (found.length === 2 && found.every((f) => f.version === `v${QUEUE_WAKE_VERSION}`)) return;
    await tx.unsafe(`
      create or replace function public.backhaul_job_queue_wake() returns trigger language plpgsql as $$
      begin
        if exists (select 1 from graphile_worker._private_jobs j
                   where j.job_queue_id = new.id and j.is_available and j.run_at <= now()) then
          perform pg_notify('jobs:insert', '{"count":1}');
        end if;
        return null;
      end $$`);
    await tx.unsafe(`
      create or replace function public.backhaul_job_queue_enter() returns trigger language plpgsql as $$
      begin
        perform 1 from graphile_worker._private_job_queues q where q.id = new.job_queue_id for share;
        return new;
      end $$`);
    for (const fn of ['backhaul_job_queue_wake', 'backhaul_job_queue_enter']) {
      await tx.unsafe(`comment on function public.${fn}() is 'v${QUEUE_WAKE_VERSION}'`);
    }
    // drop + create rather than CREATE OR REPLACE TRIGGER (PostgreSQL 14+): the control database may be older.
    await tx.unsafe(`drop trigger if exists backhaul_job_queue_wake on graphile_worker._private_job_queues`);
    await tx.unsafe(`
      create trigger backhaul_job_queue_wake
        after update of locked_at on graphile_worker._private_job_queues
        for each row when (old.locked_at is not null and new.locked_at is null)
        execute function public.backhaul_job_queue_wake()`);
    await tx.unsafe(`drop trigger if exists backhaul_job_queue_enter on graphile_worker._private_jobs`);
    await tx.unsafe(`
      create trigger backhaul_job_queue_enter
        before insert on graphile_worker._private_jobs
        for each row when (new.job_queue_id is not null)
        execute function public.backhaul_job_queue_enter()`);
  });
}
