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
