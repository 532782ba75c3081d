import { CronExpressionParser } from 'cron-parser';
import { sql as dsql } from 'drizzle-orm';
import type { Db, Tx } from '../db/client.ts';
import type { ScheduleT } from '../domain/syncs.ts';

// One scheduled job per sync (job_key `schedule:<syncId>`, replaced on every change), whose
// run_at is the next fire time. When it fires it triggers a run, unless the sync already has one
// queued or running (a slow run makes the next slot skip, never pile up), and plans the next.

export function nextFireTime(schedule: ScheduleT, from: Date): Date | null {
  switch (schedule.type) {
    case 'manual':
      return null;
    case 'interval':
      return new Date(from.getTime() + schedule.everySeconds * 1000);
    case 'cron': {
      const it = CronExpressionParser.parse(schedule.expression, { currentDate: from, tz: schedule.timezone ?? 'UTC' });
      return it.next().toDate();
    }
  }
}

export const scheduleJobKey = (syncId: string) => `schedule:${syncId}`;

/** (Re)plans a sync's scheduled job inside the caller's transaction; removes it when not scheduled. */
export async function planSchedule(tx: Tx, syncId: string, now: Date): Promise<Date | null> {
  const rows = (await tx.execute(dsql`select schedule, enabled from syncs where id = ${syncId}`)) as unknown as { schedule: ScheduleT; enabled: boolean }[];
  const sync = rows[0];
  const next = sync && sync.enabled ? nextFireTime(sync.schedule, now) : null;
  if (!next) {
    await tx.execute(dsql`select graphile_worker.remove_job(${scheduleJobKey(syncId)}::text)`);
    return null;
  }
  await tx.execute(
    dsql`select graphile_worker.add_job('backhaul_schedule', json_build_object('syncId', ${syncId}::text), run_at => ${next.toISOString()}::timestamptz,
         job_key => ${scheduleJobKey(syncId)}::text, job_key_mode => 'replace', max_attempts => 5)`,
  );
  return next;
}

/**
 * Plans the slot after a fired one in a single statement, from the sync as the firing task read
 * it (`version`): the row lock waits for a concurrent change to commit, and the plan is made only
 * if the sync is still that version, so a plan from a stale read never replaces the one the
 * change made in its own transaction. When the sync changed, is gone or is no longer scheduled,
 * planSchedule re-reads it (the general path: replace or remove the job).
 */
export async function planNextSlot(db: Db, sync: { id: string; version: number; enabled: boolean; schedule: ScheduleT }, now: Date): Promise<Date | null> {
  const next = sync.enabled ? nextFireTime(sync.schedule, now) : null;
  if (next) {
    const planned = (await db.execute(
      dsql`with s as materialized (select id from syncs where id = ${sync.id} and version = ${sync.version} and enabled for update)
           select graphile_worker.add_job('backhaul_schedule', json_build_object('syncId', s.id), run_at => ${next.toISOString()}::timestamptz,
                  job_key => ${scheduleJobKey(sync.id)}::text, job_key_mode => 'replace', max_attempts => 5)
           from s`,
    )) as unknown as unknown[];
    if (planned.length) return next;
  }
  return db.transaction((tx) => planSchedule(tx, sync.id, now));
}
