import { and, desc, eq, inArray, or, sql } from 'drizzle-orm';
import type { Logger } from 'pino';
import type { Database, Tx } from '../db/client.ts';
import { alertChannels, alerts, runs, syncs } from '../db/schema.ts';
import type { Clock } from '../engine/rate-limiter.ts';
import type { RunCounts, RunError } from '../engine/status.ts';
import { alertView, type AlertKind, type AlertRow } from '../domain/alerts.ts';
import type { RunRow } from '../domain/runs.ts';
import type { Services } from '../domain/services.ts';
import { syncView, type AlertsT } from '../domain/syncs.ts';
import { ConnectorError } from '../errors.ts';
import { newId } from '../lib/ids.ts';
import { sendToChannel, type AlertMessage } from './channels.ts';

// Alert rules, evaluated when a run finishes (cancelled runs are ignored):
//   run_failed            alerts.onFailure and the run failed
//   row_failures          (rejected + invalid) / queried above alerts.rowFailurePercent (not judged on failed runs)
//   slow_run              the run took longer than alerts.maxDurationSeconds
//   consecutive_failures  the last alerts.consecutiveFailures runs all failed
// An alert is raised once while its condition holds (a partial unique index keeps one open per
// sync and kind) and resolved, with a recovery message, by the first run where it no longer
// holds. Each raise/resolve notifies the sync's channels (one durable job per channel, retried
// by graphile-worker) and emits alert.raised / alert.resolved to webhook endpoints.

export interface AlertingOptions {
  database: Database;
  services: Services;
  logger: Logger;
  clock: Clock;
  timeoutMs: number;
  denyPrivateNetworks: boolean;
  baseUrl: () => string;
  onAlert?: (kind: string, action: 'raised' | 'resolved') => void;
}

interface Condition {
  holds: boolean;
  summary: string;
}

export function createAlerting(o: AlertingOptions) {
  const db = o.database.db;

  function conditions(run: RunRow, label: string, rules: AlertsT, recent: string[]): Map<AlertKind, Condition | 'skip'> {
    const out = new Map<AlertKind, Condition | 'skip'>();
    const c = run.counts as RunCounts;
    const failed = run.status === 'failed';
    if (rules.onFailure) {
      const err = run.error as RunError | null;
      out.set('run_failed', { holds: failed, summary: `Sync ${label} failed: ${err?.message ?? 'no reason given'}` });
    }
    if (rules.rowFailurePercent !== null) {
      if (failed) out.set('row_failures', 'skip');
      else {
        const bad = c.invalid + c.rejected.insert + c.rejected.update + c.rejected.delete;
        const pct = c.queried > 0 ? (bad / c.queried) * 100 : 0;
        out.set('row_failures', {
          holds: pct > rules.rowFailurePercent,
          summary: `Sync ${label}: ${pct.toFixed(1)}% of rows were rejected or invalid (${bad} of ${c.queried}; threshold ${rules.rowFailurePercent}%)`,
        });
      }
    }
    if (rules.maxDurationSeconds !== null && run.startedAt && run.finishedAt) {
      const s = Math.round((run.finishedAt.getTime() - run.startedAt.getTime()) / 1000);
      out.set('slow_run', { holds: s > rules.maxDurationSeconds, summary: `Sync ${label}: the run took ${s} s (limit ${rules.maxDurationSeconds} s)` });
    }
    if (rules.consecutiveFailures !== null) {
      const n = rules.consecutiveFailures;
      out.set('consecutive_failures', {
        holds: recent.length >= n && recent.slice(0, n).every((s) => s === 'failed'),
        summary: `Sync ${label} failed ${n} times in a row`,
      });
    }
    return out;
  }

  async function enqueueNotifications(tx: Tx, alert: AlertRow, channelRefs: string[], action: 'raised' | 'resolved', runId: string, sync: { id: string; slug: string; name: string }): Promise<void> {
    if (channelRefs.length) {
      const chans = await tx
        .select({ id: alertChannels.id })
        .from(alertChannels)
        .where(and(eq(alertChannels.workspaceId, alert.workspaceId), or(inArray(alertChannels.id, channelRefs), inArray(alertChannels.slug, channelRefs))));
      for (const ch of chans) {
        await tx.execute(
          sql`select graphile_worker.add_job('backhaul_alert', json_build_object('alertId', ${alert.id}::text, 'channelId', ${ch.id}::text, 'action', ${action}::text, 'runId', ${runId}::text), max_attempts => 10)`,
        );
      }
    }
    await o.services.webhooks.emit(tx, action === 'raised' ? 'alert.raised' : 'alert.resolved', { alert: alertView(alert), sync, runId, runUrl: `${o.baseUrl()}/v1/runs/${runId}` }, {
      workspaceId: alert.workspaceId,
      syncId: alert.syncId,
      runId,
    });
    o.onAlert?.(alert.kind, action);
  }

  async function evaluate(run: RunRow): Promise<void> {
    if (run.status === 'cancelled') return;
    const [syncRow] = await db.select().from(syncs).where(eq(syncs.id, run.syncId));
    if (!syncRow) return;
    const sync = syncView(syncRow);
    const rules = sync.alerts;
    const recent = rules.consecutiveFailures
      ? (
          await db
            .select({ status: runs.status })
            .from(runs)
            .where(and(eq(runs.syncId, sync.id), inArray(runs.status, ['succeeded', 'partially_succeeded', 'failed'])))
            .orderBy(desc(runs.id))
            .limit(rules.consecutiveFailures)
        ).map((r) => r.status)
      : [];
    const conds = conditions(run, `"${sync.name}" (${sync.slug})`, rules, recent);
    const subject = { id: sync.id, slug: sync.slug, name: sync.name };
    await db.transaction(async (tx) => {
      const open = await tx.select().from(alerts).where(and(eq(alerts.syncId, sync.id), eq(alerts.status, 'open'))).for('update');
      for (const [kind, cond] of conds) {
        if (cond === 'skip' || !cond.holds || open.some((a) => a.kind === kind)) continue;
        const [raised] = await tx
          .insert(alerts)
          .values({ id: newId('alert'), workspaceId: run.workspaceId, syncId: sync.id, kind, status: 'open', summary: cond.summary, openedRunId: run.id })
          .onConflictDoNothing()
          .returning();
        if (raised) await enqueueNotifications(tx, raised, rules.channelIds, 'raised', run.id, subject);
      }
      for (const a of open) {
        const cond = conds.get(a.kind as AlertKind);
        if (cond === 'skip' || (cond && cond.holds)) continue;
        const [resolved] = await tx
          .update(alerts)
          .set({ status: 'resolved', resolvedRunId: run.id, resolvedAt: new Date(o.clock.now()) })
          .where(and(eq(alerts.id, a.id), eq(alerts.status, 'open')))
          .returning();
        if (resolved) await enqueueNotifications(tx, resolved, rules.channelIds, 'resolved', run.id, subject);
      }
    });
  }

  /** The backhaul_alert job: one message to one channel. Throws (→ graphile-worker retries) only on retryable failures. */
  async function notify(p: { alertId: string; channelId: string; action: 'raised' | 'resolved'; runId: string }): Promise<void> {
    const [alert] = await db.select().from(alerts).where(eq(alerts.id, p.alertId));
    const [channel] = await db.select().from(alertChannels).where(eq(alertChannels.id, p.channelId));
    if (!alert || !channel) return;
    const [syncRow] = await db.select({ id: syncs.id, slug: syncs.slug, name: syncs.name }).from(syncs).where(eq(syncs.id, alert.syncId));
    const kindLabel: Record<string, string> = { run_failed: 'run failure', row_failures: 'row failures', slow_run: 'slow run', consecutive_failures: 'consecutive failures' };
    const m: AlertMessage = {
      action: p.action,
      alertId: alert.id,
      dedupKey: `backhaul-${alert.id}`,
      kind: alert.kind,
      summary:
        p.action === 'raised'
          ? alert.summary
          : `Recovered: sync ${syncRow ? `"${syncRow.name}" (${syncRow.slug})` : alert.syncId} is healthy again (${kindLabel[alert.kind] ?? alert.kind} cleared by run ${p.runId}).`,
      sync: syncRow ?? null,
      runId: p.runId,
      runUrl: `${o.baseUrl()}/v1/runs/${p.runId}`,
      at: new Date(o.clock.now()).toISOString(),
    };
    const log = o.logger.child({ alertId: alert.id, channelId: channel.id, syncId: alert.syncId });
    try {
      await sendToChannel(channel, o.services.alertChannels.secretsOf(channel), m, { timeoutMs: o.timeoutMs, denyPrivateNetworks: o.denyPrivateNetworks });
      log.info({ action: p.action, type: channel.type }, 'alert notification sent');
    } catch (e) {
      const retryable = !(e instanceof ConnectorError) || e.classification === 'retryable';
      log.warn({ err: e, action: p.action, retryable }, 'alert notification failed');
      if (retryable) throw e;
    }
  }

  return { evaluate, notify };
}
