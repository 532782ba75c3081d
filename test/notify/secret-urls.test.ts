import t from 'tap';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { startFakeCrm } from '../fakes/crm.ts';
import { startReceiver } from '../fakes/receiver.ts';
import { closedPort } from '../fakes/databases.ts';
import { runToEnd, setupSync } from '../helpers/sync-setup.ts';

// A Slack incoming webhook's URL is its credential (the path carries the token). Errors and log
// lines name the host only, whatever went wrong: a refused connection, a timeout, an error
// answer that quotes the path back.

const engine = { retryBaseMs: 5, retryMaxMs: 40, heartbeatMs: 200 };
const TOKEN_PART = 'SlackSecretToken0123456789ab';

t.test('alert channel tests and alert failures never show a secret URL', async (t) => {
  const h = await startTestBackhaul(t, { env: { BACKHAUL_WEBHOOK_TIMEOUT_MS: '400' }, start: { worker: true, engine } });
  // Answers 404 quoting the path, as a proxy or a misrouted service might; hangs on /hang.
  const echo = await startReceiver((r) => (r.path.startsWith('/hang') ? null : { status: 404, body: `no_service: nothing at ${r.path}` }));
  t.teardown(() => echo.close());
  const closed = await closedPort();
  const channel = async (slug: string, webhookUrl: string) => {
    const r = await h.request('POST', '/v1/alert-channels', { body: { slug, name: slug, type: 'slack', secrets: { webhookUrl } } });
    t.equal(r.status, 201, JSON.stringify(r.body));
    return r.body;
  };
  const cases: [string, string, string, RegExp][] = [
    ['echoing', `${echo.url}/services/T0AAA/B0BBB/${TOKEN_PART}1`, 'http_404', new RegExp(`404: no_service: nothing at \\[REDACTED\\]`)],
    ['refused', `http://127.0.0.1:${closed}/services/T0AAA/B0BBB/${TOKEN_PART}2`, 'connection_refused', new RegExp(`\\(http://127\\.0\\.0\\.1:${closed}\\)`)],
    ['hanging', `${echo.url}/hang/T0AAA/B0BBB/${TOKEN_PART}3`, 'request_timeout', new RegExp(`\\(${echo.url.replace(/[.]/g, '\\.')}\\)`)],
  ];
  const all: string[] = [];
  for (const [slug, url, code, shown] of cases) {
    const ch = await channel(slug, url);
    const r = await h.request('POST', `/v1/alert-channels/${ch.id}/test`);
    t.equal(r.status, 200);
    t.equal(r.body.ok, false);
    t.equal(r.body.error.code, code, JSON.stringify(r.body));
    t.match(r.body.error.message, shown, `${slug}: the host is named: ${r.body.error.message}`);
    all.push(r.text);
  }

  // An alert whose delivery fails: the job's log lines name the host only.
  const crm = await startFakeCrm({ p5xx: 1 });
  t.teardown(() => crm.close());
  const { syncId } = await setupSync(t, h, crm.url, { rows: 3, delivery: { maxRetries: 0 } });
  const p = await h.request('PATCH', `/v1/syncs/${syncId}`, { body: { alerts: { channelIds: ['echoing', 'refused'], onFailure: true } } });
  t.equal(p.status, 200, JSON.stringify(p.body));
  t.equal((await runToEnd(h, syncId)).status, 'failed');
  const deadline = Date.now() + 60_000;
  while (h.logs.filter((l) => l.includes('alert notification failed')).length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  const failures = h.logs.filter((l) => l.includes('alert notification failed'));
  t.ok(failures.length >= 2, `both channels failed and logged (${failures.length})`);
  t.match(failures.join('\n'), /http_404|404/);
  all.push(...h.logs);

  const text = all.join('\n');
  t.notOk(text.includes(TOKEN_PART), 'the webhook token appears in no answer and no log line');
  t.notOk(text.includes('/services/T0AAA/B0BBB'), 'nor does the URL path');
});
