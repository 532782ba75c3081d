import type { Logger } from 'pino';
import { sql as dsql } from 'drizzle-orm';
import type { Database, Db, Tx } from '../db/client.ts';
import type { Services } from '../domain/services.ts';
import type { ScheduleT } from '../domain/syncs.ts';
import { nextCronTime } from './cron-time.ts';

// One scheduled job per sync (job_key `schedule:<syncId>`, replaced on every change), whose
// run_at is the next fire time. When it fires it triggers a run, unless the sync already has one
// queued or running (a slow run makes the next slot skip, never pile up), and plans the next.
//
// Slots are fixed by the schedule, never by when the previous one ran: an interval's slots are
// anchor + k × everySeconds (the anchor is schedule.anchor, or the sync's creation), a cron's are
// the expression's times in its zone. The next slot is the first one strictly after both the
// clock and the slot that fired, so a late fire plans the next slot of the grid (slots it
// overran are skipped, not queued), and a worker clock a little behind the database's, which
// fires the job, cannot plan the same slot twice.

/** What a plan needs of a sync. */
export interface SchedulableSync {
  schedule: ScheduleT;
  /** The default anchor of an interval schedule. */
  createdAt: Date;
}

/** An interval schedule's grid origin: its explicit anchor, or the sync's creation. */
export function intervalAnchor(schedule: Extract<ScheduleT, { type: 'interval' }>, createdAt: Date): Date {
  return schedule.anchor ? new Date(schedule.anchor) : createdAt;
}

/**
 * The sync's first slot strictly after `after`, or null for a manual schedule.
 * interval: anchor + k × everySeconds for the smallest integer k (negative too: the anchor sets
 * the grid's phase, not a start) giving a time after `after`. cron: see nextCronTime.
 */
export function nextFireTime(sync: SchedulableSync, after: Date): Date | null {
  const s = sync.schedule;
  switch (s.type) {
    case 'manual':
      return null;
    case 'interval': {
      const anchor = intervalAnchor(s, sync.createdAt).getTime();
      const every = s.everySeconds * 1000;
      const k = Math.floor((after.getTime() - anchor) / every) + 1;
      return new Date(anchor + k * every);
    }
    case 'cron':
      return nextCronTime(s.expression, s.timezone ?? 'UTC', after);
  }
}

export const scheduleJobKey = (syncId: string) => `schedule:${syncId}`;

/** (Re)plans a sync's scheduled job inside the caller's transaction; removes it when not scheduled. */
export async function planSchedule(tx: Tx, syncId: string, now: Date): Promise<Date | null> {
  return planSlot(tx, { table: 'syncs', lock: false, task: 'backhaul_schedule', payloadKey: 'syncId', jobKey: scheduleJobKey(syncId) }, syncId, now);
}

/**
 * The next slot of a scheduled sync or sequence, after `after`, as its graphile-worker job (keyed, so
 * a re-plan replaces it); the job is removed when the row is gone, disabled or manual. With `lock`,
 * the row is locked first (NO KEY UPDATE) so that a plan made from a read a concurrent change makes
 * stale waits for that change and reads it.
 */
async function planSlot(
  tx: Tx,
  o: { table: 'syncs' | 'sequences'; lock: boolean; task: string; payloadKey: string; jobKey: string },
  id: string,
  after: Date,
): Promise<Date | null> {
  const rows = (await tx.execute(
    dsql`select schedule, enabled, created_at from ${dsql.identifier(o.table)} where id = ${id} ${o.lock ? dsql`for no key update` : dsql``}`,
  )) as unknown as { schedule: ScheduleT; enabled: boolean; created_at: string | Date }[];
  const row = rows[0];
  const next = row && row.enabled ? nextFireTime({ schedule: row.schedule, createdAt: new Date(row.created_at) }, after) : null;
  if (!next) {
    await tx.execute(dsql`select graphile_worker.remove_job(${o.jobKey}::text)`);
    return null;
  }
  await tx.execute(
    dsql`select graphile_worker.add_job(${o.task}::text, json_build_object(${o.payloadKey}::text, ${id}::text), run_at => ${next.toISOString()}::timestamptz,
         job_key => ${o.jobKey}::text, job_key_mode => 'replace', max_attempts => 5)`,
  );
  return next;
}

/** The sync as the firing task read it. */
export interface FiredSync extends SchedulableSync {
  id: string;
  version: number;
  enabled: boolean;
}

/**
 * Plans the slot after a fired one (`firedAt`: the job's run_at) in a single statement, from the
 * sync as the firing task read it (`version`): the row lock (NO KEY UPDATE: it waits for a change,
 * which locks the row FOR UPDATE, not for a run's key-share locks) waits for a concurrent change to
 * commit, and the plan is made only if the sync is still that version, so a plan from a stale
 * read never replaces the one the change made in its own transaction. When the sync changed, is
 * gone or is no longer scheduled, planSchedule re-reads it (the general path: replace or remove
 * the job). Returns the planned slot, or null when none.
 */
export async function planNextSlot(db: Db, sync: FiredSync, now: Date, firedAt: Date): Promise<Date | null> {
  const after = new Date(Math.max(now.getTime(), firedAt.getTime()));
  const next = sync.enabled ? nextFireTime(sync, after) : null;
  if (next) {
    const planned = (await db.execute(
      dsql`with s as materialized (select id from syncs where id = ${sync.id} and version = ${sync.version} and enabled for no key update)
           select graphile_worker.add_job('backhaul_schedule', json_build_object('syncId', s.id), run_at => ${next.toISOString()}::timestamptz,
                  job_key => ${scheduleJobKey(sync.id)}::text, job_key_mode => 'replace', max_attempts => 5)
           from s`,
    )) as unknown as unknown[];
    if (planned.length) return next;
  }
  return db.transaction((tx) => planSchedule(tx, sync.id, after));
}

export type SlotOutcome = 'triggered' | 'skipped' | 'disabled' | 'gone';

/**
 * A sync's slot has come (the backhaul_schedule task): trigger a run unless the sync has one
 * queued or running (the slot is skipped then), and plan the next slot. `now` is the worker's
 * clock, `firedAt` the job's run_at (the slot). Returns what happened and the next slot.
 */
export async function fireSlot(
  deps: { database: Database; services: Services; logger: Logger },
  syncId: string,
  now: Date,
  firedAt: Date,
): Promise<{ outcome: SlotOutcome; next: Date | null }> {
  const { database, services, logger } = deps;
  // One statement reads the sync, triggers its run unless one is queued or running, and plans an
  // interval schedule's next slot (the first of the grid after both the clock and the fired slot).
  const after = new Date(Math.max(now.getTime(), firedAt.getTime()));
  const sync = await services.runs.fireScheduled(syncId, after);
  if (!sync) return { outcome: 'gone', next: null };
  // Not created while enabled: a run was active (or was queued while the statement waited).
  const outcome: SlotOutcome = sync.created ? 'triggered' : sync.enabled ? 'skipped' : 'disabled';
  if (outcome === 'skipped') logger.info({ syncId, activeRun: sync.active }, 'scheduled slot skipped: a run is still active');
  if (sync.planned) return { outcome, next: sync.planned };
  // A cron schedule (its slots need the zone rules), or a sync disabled or no longer scheduled.
  const fired = { id: syncId, version: sync.version, enabled: sync.enabled, schedule: sync.schedule, createdAt: sync.createdAt };
  return { outcome, next: await planNextSlot(database.db, fired, now, firedAt) };
}

// ---- Sequences: the same schedule shapes and slot rules, one job per sequence. ----

export const sequenceScheduleJobKey = (sequenceId: string) => `sequence-schedule:${sequenceId}`;

/**
 * (Re)plans a sequence's scheduled job (`backhaul_sequence_schedule`, job key
 * `sequence-schedule:<id>`) at its first slot strictly after `after`, inside the caller's
 * transaction; removes it when the sequence is gone, disabled or manual. The sequence row is
 * locked first (NO KEY UPDATE), so a plan made from a read that a concurrent change makes stale
 * waits for that change and reads it.
 */
export async function planSequenceSchedule(tx: Tx, sequenceId: string, after: Date): Promise<Date | null> {
  return planSlot(tx, { table: 'sequences', lock: true, task: 'backhaul_sequence_schedule', payloadKey: 'sequenceId', jobKey: sequenceScheduleJobKey(sequenceId) }, sequenceId, after);
}

/**
 * A sequence's slot has come: start a sequence run unless one is active (the slot is skipped),
 * and plan the next slot (after both the clock and the fired slot, as for syncs).
 */
export async function fireSequenceSlot(
  deps: { database: Database; services: Services; logger: Logger },
  sequenceId: string,
  now: Date,
  firedAt: Date,
): Promise<{ outcome: SlotOutcome; next: Date | null }> {
  const fired = await deps.services.sequences.fireScheduled(sequenceId);
  if (!fired) return { outcome: 'gone', next: null };
  if (!fired.created) deps.logger.info({ sequenceId }, 'scheduled sequence slot skipped: a sequence run is active (or the sequence is disabled)');
  const after = new Date(Math.max(now.getTime(), firedAt.getTime()));
  const next = await deps.database.db.transaction((tx) => planSequenceSchedule(tx, sequenceId, after));
  return { outcome: fired.created ? 'triggered' : 'skipped', next };
}
