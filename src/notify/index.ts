import { and, eq, inArray } from 'drizzle-orm';
import type { Task } from 'graphile-worker';
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import type { Database } from '../db/client.ts';
import { runRecords, runs, syncs } from '../db/schema.ts';
import type { RunHooks } from '../engine/executor.ts';
import { realClock, type Clock } from '../engine/rate-limiter.ts';
import { killPoint } from '../engine/run-state.ts';
import type { PhaseTiming, RunCounts } from '../engine/status.ts';
import { runView, type RunRow } from '../domain/runs.ts';
import type { Services } from '../domain/services.ts';
import { createAlerting } from './alerts.ts';
import { testChannel } from './channels.ts';
import { createDebugger } from './debugger.ts';
import { createWebhookSender } from './webhook-sender.ts';
import { NO_SECRETS, type Redactor } from '../lib/redact.ts';

// Callbacks, alerts, metrics and the row debugger, plugged into the engine's RunHooks and the
// worker's task list. Nothing here can fail or slow a run: hooks only write rows and enqueue
// jobs (the executor logs a hook that throws), and every outbound request is a job of its own.

export const FAILED_ROWS_IN_EVENT = 100;

export interface NotifierOptions {
  database: Database;
  services: Services;
  config: Config;
  logger: Logger;
  clock?: Clock;
  /** Base URL of links in events (BACKHAUL_PUBLIC_URL, else the address the API listens on). */
  baseUrl: () => string;
}

export interface Notifier {
  hooks: RunHooks;
  tasks: Record<string, Task>;
  crontab: string[];
  sendDelivery(deliveryId: string): Promise<unknown>;
}

export function createNotifier(o: NotifierOptions): Notifier {
  const { database, services, config, logger } = o;
  const clock = o.clock ?? realClock;
  const metrics = services.metrics;
  services.alertChannels.timeoutMs = config.webhookTimeoutMs;
  services.alertChannels.tester = testChannel;
  // Per run: the redactor of its destination connection (every secret, in every encoding), for
  // the row debugger's exchanges and the run.completed payload.
  const redactors = new Map<string, Promise<Redactor>>();
  function redactorFor(run: RunRow): Promise<Redactor> {
    let r = redactors.get(run.id);
    if (!r) {
      r = (async () => {
        const [s] = await database.db.select({ destinationId: syncs.destinationId }).from(syncs).where(eq(syncs.id, run.syncId));
        if (!s) return NO_SECRETS;
        return services.connections.redactorFor(await services.connections.row(database.db, run.workspaceId, s.destinationId));
      })().catch((e: unknown) => {
        logger.warn({ err: e, runId: run.id }, 'could not build the redactor of the run\'s destination');
        return NO_SECRETS;
      });
      redactors.set(run.id, r);
      if (redactors.size > 1000) redactors.delete(redactors.keys().next().value!);
    }
    return r;
  }
  const dbg = createDebugger({ database, logger, retentionDays: config.debuggerRetentionDays, redactorFor });
  const sendDelivery = createWebhookSender({
    database,
    webhooks: services.webhooks,
    clock,
    logger,
    timeoutMs: config.webhookTimeoutMs,
    denyPrivateNetworks: config.denyPrivateNetworks,
    onOutcome: (outcome, target) => metrics.webhookDeliveries.inc({ target, outcome }),
  });
  const alerting = createAlerting({
    database,
    services,
    logger,
    clock,
    timeoutMs: config.webhookTimeoutMs,
    denyPrivateNetworks: config.denyPrivateNetworks,
    baseUrl: o.baseUrl,
    onAlert: (kind, action) => metrics.alerts.inc({ kind, action }),
  });

  // sync id → destination connection id and slug (for metric labels and event bodies).
  const syncInfo = new Map<string, { destinationId: string; slug: string; name: string }>();
  async function infoFor(syncId: string) {
    let i = syncInfo.get(syncId);
    if (!i) {
      const [s] = await database.db.select({ destinationId: syncs.destinationId, slug: syncs.slug, name: syncs.name }).from(syncs).where(eq(syncs.id, syncId));
      if (!s) return undefined;
      syncInfo.set(syncId, (i = s));
      if (syncInfo.size > 10_000) syncInfo.delete(syncInfo.keys().next().value!);
    }
    return i;
  }

  const safe = async (what: string, run: RunRow, fn: () => Promise<unknown>) => {
    try {
      await fn();
    } catch (e) {
      logger.error({ err: e, runId: run.id, syncId: run.syncId }, `${what} failed`);
    }
  };

  async function runCompletedData(run: RunRow): Promise<Record<string, unknown>> {
    const info = await infoFor(run.syncId);
    syncInfo.delete(run.syncId); // refreshed per run: a renamed sync shows its new slug
    const c = run.counts as RunCounts;
    const failedCount = c.invalid + c.rejected.insert + c.rejected.update + c.rejected.delete;
    const failed = failedCount
      ? await database.db
          .select()
          .from(runRecords)
          .where(and(eq(runRecords.runId, run.id), inArray(runRecords.status, ['rejected', 'invalid'])))
          .orderBy(runRecords.primaryKey, runRecords.operation)
          .limit(FAILED_ROWS_IN_EVENT)
      : [];
    const base = `${o.baseUrl()}/v1/runs/${run.id}`;
    return {
      run: runView(run),
      sync: info ? { id: run.syncId, slug: info.slug, name: info.name } : { id: run.syncId },
      failedRows: failed.map((r) => ({ primaryKey: r.primaryKey, operation: r.operation, status: r.status, code: r.errorCode, message: r.errorMessage })),
      failedRowCount: failedCount,
      failedRowsTruncated: failedCount > failed.length,
      runUrl: base,
      recordsUrl: `${base}/records`,
      failedRecordsUrls: { rejected: `${base}/records?status=rejected`, invalid: `${base}/records?status=invalid` },
    };
  }

  const hooks: RunHooks = {
    runStarted: async (run) => {
      const info = await infoFor(run.syncId);
      await services.webhooks.emit(
        database.db,
        'run.started',
        { run: runView(run), sync: info ? { id: run.syncId, slug: info.slug, name: info.name } : { id: run.syncId }, runUrl: `${o.baseUrl()}/v1/runs/${run.id}` },
        { workspaceId: run.workspaceId, syncId: run.syncId, runId: run.id },
        new Date(clock.now()),
      );
    },
    // Process-local bookkeeping, inline. The durable part (events, alerts) is the outbox task below.
    runFinished: async (run) => {
      metrics.runFinished(run);
      await safe('row debugger flush', run, () => dbg.flush(run.id));
      // Phases closed by the run's finish are not reported by phaseFinished.
      const end = run.finishedAt?.toISOString();
      for (const ph of run.phases as PhaseTiming[]) {
        if (end && ph.finishedAt === end) metrics.phaseDuration.observe({ phase: ph.name }, (Date.parse(ph.finishedAt) - Date.parse(ph.startedAt)) / 1000);
      }
    },
    batchDelivered: async (run, batch, result) => {
      const info = await infoFor(run.syncId);
      if (info) metrics.exchanges(info.destinationId, result.exchanges.map((e) => e.exchange));
      await dbg.batchDelivered(run, batch, result);
    },
    retry: (syncId, code) => {
      const known = syncInfo.get(syncId);
      if (known) metrics.retry(syncId, known.destinationId, code);
      else void infoFor(syncId).then((i) => metrics.retry(syncId, i?.destinationId, code), () => metrics.retry(syncId, undefined, code));
    },
    phaseFinished: (_run, phase, ms) => metrics.phaseDuration.observe({ phase }, ms / 1000),
    queried: (run, read) => {
      if (read.keysScanned) metrics.sourceRowsRead.inc({ sync: run.syncId, read: 'key' }, read.keysScanned);
      metrics.sourceRowsRead.inc({ sync: run.syncId, read: 'row' }, read.rowsFetched);
      if (read.incremental) metrics.comparisons.inc({ sync: run.syncId, table: read.comparison === 'sql' ? 'sql' : read.keptTable ? 'kept' : 'loaded' });
    },
  };

  /**
   * The outbox of a terminal run, enqueued in the transaction that made it terminal: emits
   * run.completed (endpoints and the trigger's callbackUrl) at most once — the emit and the mark
   * commit together under the run's row lock — then evaluates alert rules (marked after, so a crash
   * in between evaluates again; open alerts are deduplicated).
   */
  const backhaul_run_finished: Task = async (payload) => {
    const { runId } = payload as { runId: string };
    const [run] = await database.db.select().from(runs).where(eq(runs.id, runId));
    if (!run || !run.finishedAt) return;
    if (!run.completedEmittedAt) {
      const data = (await redactorFor(run)).value(await runCompletedData(run));
      await database.db.transaction(async (tx) => {
        const [locked] = await tx.select({ at: runs.completedEmittedAt }).from(runs).where(eq(runs.id, runId)).for('update');
        if (!locked || locked.at) return;
        await services.webhooks.emit(tx, 'run.completed', data, { workspaceId: run.workspaceId, syncId: run.syncId, runId: run.id, callbackUrl: run.callbackUrl }, new Date(clock.now()));
        killPoint('run-finished:emitted-uncommitted');
        await tx.update(runs).set({ completedEmittedAt: new Date() }).where(eq(runs.id, runId));
      });
      killPoint('run-finished:emitted');
    }
    if (!run.alertsEvaluatedAt) {
      await alerting.evaluate(run);
      killPoint('run-finished:alerts-evaluated');
      await database.db.update(runs).set({ alertsEvaluatedAt: new Date() }).where(eq(runs.id, runId));
    }
    redactors.delete(run.id);
  };

  const backhaul_webhook: Task = async (payload) => {
    await sendDelivery((payload as { deliveryId: string }).deliveryId);
  };
  const backhaul_alert: Task = async (payload) => {
    await alerting.notify(payload as { alertId: string; channelId: string; action: 'raised' | 'resolved'; runId: string });
  };
  const backhaul_notify_maintenance: Task = async () => {
    const exchanges = await dbg.purge();
    const deliveries = await database.sql`delete from webhook_deliveries where created_at < now() - ${`${config.recordRetentionDays} days`}::interval and status <> 'pending'`;
    logger.debug({ runExchanges: exchanges, webhookDeliveries: deliveries.count }, 'notify maintenance done');
  };

  return {
    hooks,
    tasks: { backhaul_run_finished, backhaul_webhook, backhaul_alert, backhaul_notify_maintenance },
    crontab: ['17 * * * * backhaul_notify_maintenance'],
    sendDelivery,
  };
}
