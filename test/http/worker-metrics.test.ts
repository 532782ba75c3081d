import { spawn, type ChildProcess } from 'node:child_process';
import t from 'tap';
import { freePort } from '../../src/db/embedded.ts';
import { startFakeCrm } from '../fakes/crm.ts';
import { startTestBackhaul, type TestBackhaul } from '../helpers/backhaul.ts';
import { runToEnd, setupSync } from '../helpers/sync-setup.ts';

// `backhaul worker` has no API, so its row and run counters (they are counted in the process
// that ran the run) need a listener of their own: --metrics-port or BACKHAUL_METRICS_PORT serves
// GET /metrics, /healthz and /readyz.

const ROOT = new URL('../..', import.meta.url).pathname;

function worker(h: TestBackhaul, args: string[], extra: Record<string, string>, t: { teardown(fn: () => unknown): void }) {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('TAP') && !k.startsWith('_TAPJS') && k !== 'NODE_OPTIONS') env[k] = v;
  const child: ChildProcess = spawn(process.execPath, ['src/cli.ts', 'worker', ...args], {
    cwd: ROOT,
    env: { ...env, DATABASE_URL: h.databaseUrl, BACKHAUL_ENCRYPTION_KEY: h.bh.config.encryptionKey, HOST: '127.0.0.1', LOG_LEVEL: 'info', ...extra },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<{ code: number | null; signal: string | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })));
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return { child, out: () => out, err: () => err, exited };
}

async function until(base: string, path: string): Promise<Response> {
  for (let i = 0; i < 1200; i++) {
    const res = await fetch(base + path).catch(() => undefined);
    if (res) return res;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${base}${path} never answered`);
}

const sample = (text: string, name: string, labels: Record<string, string>) => {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && want.every((w) => l.includes(w)));
  return line ? Number(line.split(' ').at(-1)) : undefined;
};

t.test('backhaul worker --metrics-port: the counters of the runs it executed, health and readiness', async (t) => {
  const h = await startTestBackhaul(t); // the API only: runs execute in the worker process
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const { syncId } = await setupSync(t, h, crm.url, { rows: 25 });
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const w = worker(h, ['--metrics-port', String(port)], {}, t);

  const health = await until(base, '/healthz');
  t.equal(health.status, 200);
  t.same(await health.json(), { status: 'ok' });
  t.match(w.out(), new RegExp(`"url":"${base}".*"msg":"Metrics listening`), 'the listener is logged');

  const run = await runToEnd(h, syncId);
  t.equal(run.status, 'succeeded');
  // The worker adds a run's counts when it finishes the run, before its job completes.
  let text = '';
  for (let i = 0; i < 600 && sample(text, 'backhaul_runs_total', { sync: syncId, status: 'succeeded' }) !== 1; i++) {
    if (i) await new Promise((r) => setTimeout(r, 50));
    text = await (await fetch(`${base}/metrics`)).text();
  }
  t.equal(sample(text, 'backhaul_runs_total', { sync: syncId, status: 'succeeded' }), 1, 'the run it executed');
  t.equal(sample(text, 'backhaul_rows_succeeded_total', { sync: syncId, operation: 'insert' }), 25, 'and its rows');
  const apiText = await (await fetch(`${h.url}/metrics`)).text();
  t.equal(sample(apiText, 'backhaul_runs_total', { sync: syncId, status: 'succeeded' }), undefined, 'which the API process did not count');

  const readyz = await fetch(`${base}/readyz`);
  t.equal(readyz.status, 200);
  t.same(await readyz.json(), { status: 'ok', checks: { database: 'ok', worker: 'ok' } });
  const nope = await fetch(`${base}/v1/syncs`);
  t.equal(nope.status, 404);
  t.match(nope.headers.get('content-type'), /application\/problem\+json/);
  t.match(await nope.json(), { status: 404, code: 'not_found' });

  w.child.kill('SIGTERM');
  t.same(await w.exited, { code: 0, signal: null }, 'SIGTERM: exit 0');
  t.equal(w.err(), '');
  t.equal(await fetch(`${base}/healthz`).then((r) => r.status, () => 'closed'), 'closed', 'the listener closed with it');
});

t.test('BACKHAUL_METRICS_PORT, with BACKHAUL_METRICS_TOKEN', async (t) => {
  const h = await startTestBackhaul(t);
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const w = worker(h, [], { BACKHAUL_METRICS_PORT: String(port), BACKHAUL_METRICS_TOKEN: 'scrape-me' }, t);
  await until(base, '/healthz');
  const refused = await fetch(`${base}/metrics`);
  t.equal(refused.status, 401);
  t.match(await refused.json(), { code: 'unauthorized' });
  const ok = await fetch(`${base}/metrics`, { headers: { authorization: 'Bearer scrape-me' } });
  t.equal(ok.status, 200);
  t.match(ok.headers.get('content-type'), /text\/plain/);
  t.match(await ok.text(), /^# TYPE backhaul_runs_total counter$/m);
  w.child.kill('SIGTERM');
  t.same(await w.exited, { code: 0, signal: null });
});

t.test('without a port, no listener; a bad one is a configuration error', async (t) => {
  const h = await startTestBackhaul(t);
  const bad = worker(h, ['--metrics-port', 'abc'], {}, t);
  t.same(await bad.exited, { code: 2, signal: null });
  t.match(bad.err(), /^Invalid configuration:\n {2}- --metrics-port abc: expected a port from 0 to 65535\n$/);
  const w = worker(h, [], {}, t);
  for (let i = 0; i < 1200 && !/"msg":"Worker started"/.test(w.out()); i++) await new Promise((r) => setTimeout(r, 100));
  t.match(w.out(), /"msg":"Worker started"/);
  t.notMatch(w.out(), /Metrics listening/);
  w.child.kill('SIGTERM');
  t.same(await w.exited, { code: 0, signal: null });
});
