import type { AlertChannelRow, ChannelConfigT, ChannelSecretsT, ChannelTestResultT } from '../domain/alert-channels.ts';
import { ConnectorError } from '../errors.ts';
import { newId } from '../lib/ids.ts';
import { httpRequest } from '../lib/http-client.ts';
import { secretRedactor, type Redactor } from '../lib/redact.ts';
import { signedHeaders } from '../lib/signing.ts';

// What an alert looks like on each channel type:
//   Slack incoming webhook: POST {text, blocks} (https://api.slack.com/messaging/webhooks) → 200 "ok"
//   PagerDuty Events API v2: POST {routing_key, event_action: trigger|resolve, dedup_key,
//     payload{summary, severity, source, component, class, custom_details}} → 202
//     (https://developer.pagerduty.com/docs/events-api-v2/trigger-events/)
//   Plain webhook: POST {type: alert.raised|alert.resolved|alert.test, timestamp, data}, signed
//     like our webhooks (Standard Webhooks) when the channel has a signingSecret.

export interface AlertMessage {
  action: 'raised' | 'resolved' | 'test';
  alertId: string;
  /** Same for an alert's raise and its resolve (PagerDuty dedup_key). */
  dedupKey: string;
  kind: string;
  summary: string;
  sync: { id: string; slug: string; name: string } | null;
  runId: string | null;
  runUrl: string | null;
  at: string;
}

export interface SendOptions {
  timeoutMs: number;
  denyPrivateNetworks: boolean;
}

const ICON = { raised: ':rotating_light:', resolved: ':white_check_mark:', test: ':wave:' } as const;

function text(m: AlertMessage): string {
  const head = m.action === 'raised' ? 'Alert' : m.action === 'resolved' ? 'Resolved' : 'Test';
  return `${ICON[m.action]} *${head}*: ${m.summary}`;
}

/**
 * Everything a channel's secrets could leak into (error messages, logs): the routing key, the
 * signing secret, and a Slack webhook URL whole, as its path, and as its last segment (the token).
 */
export function channelRedactor(secrets: ChannelSecretsT): Redactor {
  const values = [secrets.routingKey, secrets.signingSecret, secrets.webhookUrl].filter((v): v is string => typeof v === 'string');
  if (secrets.webhookUrl) {
    try {
      const u = new URL(secrets.webhookUrl);
      values.push(`${u.pathname}${u.search}`);
      const last = u.pathname.split('/').filter(Boolean).at(-1);
      if (last && last.length >= 8) values.push(last);
    } catch {
      // not a URL: redacted whole above
    }
  }
  return secretRedactor(values.filter((v) => v !== '/'));
}

/** `secretUrl`: the URL is a credential (Slack): errors name its host only. */
async function post(url: string, body: unknown, opts: SendOptions, headers: Record<string, string> = {}, secretUrl = false): Promise<{ statusCode: number; durationMs: number }> {
  const payload = JSON.stringify(body);
  const res = await httpRequest({
    method: 'POST',
    url,
    headers: { 'content-type': 'application/json', 'user-agent': 'Backhaul-Alerts/1', ...headers },
    body: payload,
    timeoutMs: opts.timeoutMs,
    maxResponseBytes: 64 * 1024,
    denyPrivateNetworks: opts.denyPrivateNetworks,
    secretUrl,
  });
  if (res.status < 200 || res.status >= 300) {
    const excerpt = res.body.subarray(0, 300).toString('utf8');
    throw new ConnectorError(`http_${res.status}`, `The channel answered ${res.status}${excerpt ? `: ${excerpt}` : ''}`, {
      classification: res.status === 429 || res.status >= 500 ? 'retryable' : 'fatal',
      hint: res.status === 401 || res.status === 403 || res.status === 404 ? 'Check the channel\'s webhook URL or routing key.' : undefined,
    });
  }
  return { statusCode: res.status, durationMs: res.durationMs };
}

/**
 * Sends one alert message. Throws ConnectorError (classification retryable for 429/5xx/network
 * failures) whose message, hint and cause never contain the channel's secrets (a Slack URL shows
 * as its host).
 */
export async function sendToChannel(row: AlertChannelRow, secrets: ChannelSecretsT, m: AlertMessage, opts: SendOptions): Promise<{ statusCode: number; durationMs: number }> {
  try {
    return await send(row, secrets, m, opts);
  } catch (e) {
    throw channelRedactor(secrets).error(e);
  }
}

async function send(row: AlertChannelRow, secrets: ChannelSecretsT, m: AlertMessage, opts: SendOptions): Promise<{ statusCode: number; durationMs: number }> {
  const config = row.config as ChannelConfigT;
  if (row.type === 'slack') {
    const blocks: unknown[] = [{ type: 'section', text: { type: 'mrkdwn', text: text(m) } }];
    const ctx = [m.sync ? `sync \`${m.sync.slug}\`` : null, m.runUrl ? `<${m.runUrl}|run ${m.runId}>` : null, `channel \`${row.slug}\``].filter(Boolean).join(' · ');
    blocks.push({ type: 'context', elements: [{ type: 'mrkdwn', text: `Backhaul · ${ctx}` }] });
    return post(secrets.webhookUrl!, { text: text(m).replace(/\*/g, ''), blocks }, opts, {}, true);
  }
  if (row.type === 'pagerduty') {
    const url = config.eventsUrl!;
    const event = (action: 'trigger' | 'resolve', dedupKey: string) => ({
      routing_key: secrets.routingKey,
      event_action: action,
      dedup_key: dedupKey,
      ...(action === 'trigger'
        ? {
            payload: {
              summary: m.summary.slice(0, 1024),
              severity: m.action === 'test' ? 'info' : config.severity ?? 'error',
              source: 'backhaul',
              component: m.sync?.slug ?? 'backhaul',
              class: m.kind,
              custom_details: { alertId: m.alertId, syncId: m.sync?.id ?? null, runId: m.runId },
            },
            ...(m.runUrl ? { links: [{ href: m.runUrl, text: `Run ${m.runId}` }] } : {}),
          }
        : {}),
    });
    if (m.action === 'test') {
      // A test must not leave an incident open: trigger, then resolve the same key.
      const r = await post(url, event('trigger', m.dedupKey), opts);
      await post(url, event('resolve', m.dedupKey), opts);
      return r;
    }
    return post(url, event(m.action === 'raised' ? 'trigger' : 'resolve', m.dedupKey), opts);
  }
  const body = JSON.stringify({ type: `alert.${m.action}`, timestamp: m.at, data: { alert: m } });
  const msgId = newId('webhookMessage');
  const headers = secrets.signingSecret ? signedHeaders([secrets.signingSecret], msgId, Math.floor(Date.now() / 1000), body) : { 'webhook-id': msgId };
  const res = await httpRequest({
    method: 'POST',
    url: config.url!,
    headers: { 'content-type': 'application/json', 'user-agent': 'Backhaul-Alerts/1', ...headers },
    body,
    timeoutMs: opts.timeoutMs,
    maxResponseBytes: 64 * 1024,
    denyPrivateNetworks: opts.denyPrivateNetworks,
  });
  if (res.status < 200 || res.status >= 300) {
    throw new ConnectorError(`http_${res.status}`, `The channel answered ${res.status}.`, { classification: res.status === 429 || res.status >= 500 ? 'retryable' : 'fatal' });
  }
  return { statusCode: res.status, durationMs: res.durationMs };
}

/** POST /v1/alert-channels/{ref}/test: one real message, with the outcome as data. */
export async function testChannel(row: AlertChannelRow, secrets: ChannelSecretsT, opts: SendOptions): Promise<ChannelTestResultT> {
  const m: AlertMessage = {
    action: 'test',
    alertId: 'test',
    dedupKey: `backhaul-test-${newId('alert')}`,
    kind: 'test',
    summary: `Test notification from Backhaul to alert channel "${row.name}".`,
    sync: null,
    runId: null,
    runUrl: null,
    at: new Date().toISOString(),
  };
  const started = Date.now();
  try {
    const r = await sendToChannel(row, secrets, m, opts);
    return { ok: true, latencyMs: Date.now() - started, statusCode: r.statusCode };
  } catch (e) {
    const ce = e instanceof ConnectorError ? e : new ConnectorError('network_error', String(e), { classification: 'retryable' });
    return { ok: false, latencyMs: Date.now() - started, error: { code: ce.code, message: ce.message, ...(ce.hint ? { hint: ce.hint } : {}) } };
  }
}
