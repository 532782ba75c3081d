import { and, eq } from 'drizzle-orm';
import type { Logger } from 'pino';
import type { Database } from '../db/client.ts';
import { webhookDeliveries, webhookEndpoints } from '../db/schema.ts';
import type { Clock } from '../engine/rate-limiter.ts';
import { enqueueDelivery, type WebhookAttemptT, type WebhookService } from '../domain/webhooks.ts';
import { ConnectorError } from '../errors.ts';
import { httpRequest } from '../lib/http-client.ts';
import { signedHeaders } from '../lib/signing.ts';

// Sends one webhook delivery attempt (the backhaul_webhook job). Retries are our own jobs,
// scheduled with run_at from the injectable clock: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 24 h
// after each failed attempt (about a day and a half in all). An endpoint answering 410 Gone
// is disabled. Runs never wait on any of this: the run only wrote rows and jobs.

export const RETRY_SCHEDULE_MS = [5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 86_400_000];
const EXCERPT_BYTES = 1024;
/** Errors that another attempt cannot fix. */
const PERMANENT = new Set(['address_not_allowed', 'invalid_url']);

export type DeliveryOutcome = 'succeeded' | 'retrying' | 'failed' | 'endpoint_disabled';

export interface SenderOptions {
  database: Database;
  webhooks: WebhookService;
  clock: Clock;
  logger: Logger;
  timeoutMs: number;
  denyPrivateNetworks: boolean;
  onOutcome?: (outcome: DeliveryOutcome, target: 'endpoint' | 'callback') => void;
}

export function createWebhookSender(o: SenderOptions) {
  const db = o.database.db;

  return async function sendDelivery(deliveryId: string): Promise<DeliveryOutcome | undefined> {
    const [d] = await db.select().from(webhookDeliveries).where(eq(webhookDeliveries.id, deliveryId));
    if (!d || d.status !== 'pending') return undefined;
    const target = d.endpointId ? 'endpoint' : 'callback';
    const attempts = [...(d.attempts as WebhookAttemptT[])];
    const nowMs = o.clock.now();
    const attemptNo = attempts.length + 1;
    let secrets: string[];
    let url = d.url;
    if (d.endpointId) {
      const [ep] = await db.select().from(webhookEndpoints).where(eq(webhookEndpoints.id, d.endpointId));
      if (!ep) return undefined;
      if (!ep.enabled) {
        attempts.push({ attempt: attemptNo, at: new Date(nowMs).toISOString(), statusCode: null, durationMs: 0, error: { code: 'endpoint_disabled', message: `The endpoint is disabled${ep.disabledReason ? `: ${ep.disabledReason}` : ''}.` }, responseExcerpt: null });
        await db.update(webhookDeliveries).set({ status: 'failed', attempts, nextAttemptAt: null, updatedAt: new Date() }).where(eq(webhookDeliveries.id, d.id));
        o.onOutcome?.('failed', target);
        return 'failed';
      }
      url = ep.url;
      secrets = o.webhooks.endpointSecrets(ep, nowMs);
    } else {
      secrets = await o.webhooks.callbackSecrets(d.workspaceId, nowMs);
    }

    const timestamp = Math.floor(nowMs / 1000);
    const started = Date.now();
    let statusCode: number | null = null;
    let excerpt: string | null = null;
    let error: { code: string; message: string } | null = null;
    try {
      const res = await httpRequest({
        method: 'POST',
        url,
        headers: { 'content-type': 'application/json', 'user-agent': 'Backhaul-Webhooks/1', ...signedHeaders(secrets, d.messageId, timestamp, d.body) },
        body: d.body,
        timeoutMs: o.timeoutMs,
        maxResponseBytes: 64 * 1024,
        denyPrivateNetworks: o.denyPrivateNetworks,
      });
      statusCode = res.status;
      excerpt = res.body.subarray(0, EXCERPT_BYTES).toString('utf8') || null;
      if (res.status < 200 || res.status >= 300) error = { code: `http_${res.status}`, message: `The endpoint answered ${res.status}.` };
    } catch (e) {
      const ce = e instanceof ConnectorError ? e : new ConnectorError('network_error', String(e), { classification: 'retryable' });
      error = { code: ce.code, message: ce.message };
    }
    attempts.push({ attempt: attemptNo, at: new Date(nowMs).toISOString(), statusCode, durationMs: Date.now() - started, error, responseExcerpt: excerpt });

    let outcome: DeliveryOutcome;
    await db.transaction(async (tx) => {
      // The delivery may have been deleted with its endpoint meanwhile: then there is nothing to record.
      const set = { attempts, updatedAt: new Date() };
      if (!error) {
        outcome = 'succeeded';
        await tx.update(webhookDeliveries).set({ ...set, status: 'succeeded', nextAttemptAt: null }).where(eq(webhookDeliveries.id, d.id));
      } else if (statusCode === 410) {
        outcome = d.endpointId ? 'endpoint_disabled' : 'failed';
        await tx.update(webhookDeliveries).set({ ...set, status: 'failed', nextAttemptAt: null }).where(eq(webhookDeliveries.id, d.id));
        if (d.endpointId) {
          const [ep] = await tx.select().from(webhookEndpoints).where(and(eq(webhookEndpoints.id, d.endpointId), eq(webhookEndpoints.enabled, true))).for('update');
          if (ep) {
            await tx
              .update(webhookEndpoints)
              .set({ enabled: false, disabledReason: `Answered 410 Gone at ${new Date(nowMs).toISOString()}`, version: ep.version + 1, updatedAt: new Date() })
              .where(eq(webhookEndpoints.id, ep.id));
          }
        }
      } else if (PERMANENT.has(error.code) || attemptNo > RETRY_SCHEDULE_MS.length) {
        outcome = 'failed';
        await tx.update(webhookDeliveries).set({ ...set, status: 'failed', nextAttemptAt: null }).where(eq(webhookDeliveries.id, d.id));
      } else {
        outcome = 'retrying';
        const next = new Date(nowMs + RETRY_SCHEDULE_MS[attemptNo - 1]);
        const updated = await tx.update(webhookDeliveries).set({ ...set, nextAttemptAt: next }).where(eq(webhookDeliveries.id, d.id)).returning({ id: webhookDeliveries.id });
        if (updated.length) await enqueueDelivery(tx, d, next);
      }
    });
    o.onOutcome?.(outcome!, target);
    o.logger[error ? 'warn' : 'debug'](
      { deliveryId: d.id, eventType: d.eventType, runId: d.runId ?? undefined, endpointId: d.endpointId ?? undefined, attempt: attemptNo, statusCode, outcome: outcome!, code: error?.code },
      `webhook delivery ${outcome!}`,
    );
    return outcome!;
  };
}

