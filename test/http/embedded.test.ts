import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../src/db/embedded.ts';
import { pgConnection } from '../helpers/http-fixtures.ts';

// From nothing: `backhaul serve` with no DATABASE_URL starts an embedded PostgreSQL in its data
// directory, prints the bootstrap key once, shuts down cleanly on SIGTERM, and keeps its data.

/** Stops a cluster left running by a Backhaul that a failed test killed (PostgreSQL has its own session). */
function stopOrphan(dataDir: string): void {
  try {
    const pid = Number(readFileSync(join(dataDir, 'pg/postmaster.pid'), 'utf8').split('\n')[0]);
    if (pid > 0) process.kill(pid, 'SIGQUIT');
  } catch {
    // none left
  }
}

const CLI = new URL('../../src/cli.ts', import.meta.url).pathname;
const ROOT = new URL('../..', import.meta.url).pathname;

interface Running {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function serve(dataDir: string, port: number, args: string[] = []): Running {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined) continue;
    if (['DATABASE_URL', 'BACKHAUL_BOOTSTRAP_API_KEY', 'BACKHAUL_ENCRYPTION_KEY', 'PORT', 'HOST', 'NODE_OPTIONS'].includes(k)) continue;
    if (k.startsWith('TAP') || k.startsWith('_TAPJS')) continue;
    env[k] = v;
  }
  Object.assign(env, { BACKHAUL_DATA_DIR: dataDir, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'info' });
  const child = spawn(process.execPath, [CLI, 'serve', ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return { child, stdout: () => out, stderr: () => err, exited };
}

async function waitReady(r: Running, base: string, timeoutMs = 90_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exited = false;
  void r.exited.then(() => (exited = true));
  while (Date.now() < deadline) {
    if (exited) throw new Error(`backhaul exited early:\n${r.stdout()}\n${r.stderr()}`);
    try {
      const res = await fetch(`${base}/readyz`);
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((res) => setTimeout(res, 200));
  }
  throw new Error(`backhaul not ready after ${timeoutMs} ms:\n${r.stdout()}\n${r.stderr()}`);
}

async function stop(r: Running) {
  r.child.kill('SIGTERM');
  const timer = setTimeout(() => r.child.kill('SIGKILL'), 45_000);
  const res = await r.exited;
  clearTimeout(timer);
  return res;
}

t.test('embedded database from nothing', { timeout: 240_000 }, async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'bh-embedded-'));
  t.teardown(() => {
    stopOrphan(dataDir);
    rmSync(dataDir, { recursive: true, force: true });
  });
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;

  const first = serve(dataDir, port);
  t.teardown(() => {
    if (first.child.exitCode === null) first.child.kill('SIGKILL');
  });
  await waitReady(first, base);
  const tokens = first.stdout().match(/\bbh_[A-Za-z0-9_-]{20,}/g) ?? [];
  t.equal(tokens.length, 1, 'the bootstrap key is printed once');
  const token = tokens[0];
  const auth = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };

  const created = await fetch(`${base}/v1/connections`, { method: 'POST', headers: auth, body: JSON.stringify(pgConnection('survivor', { secrets: { password: 'kept-across-restarts' } })) });
  t.equal(created.status, 201, 'the printed key works');
  const conn = await created.json();
  const ws = await fetch(`${base}/v1/workspaces`, { headers: auth });
  t.equal(ws.status, 200, 'it is an owner key');

  const r1 = await stop(first);
  t.same(r1, { code: 0, signal: null }, 'SIGTERM: exits 0');

  const second = serve(dataDir, port);
  t.teardown(() => {
    if (second.child.exitCode === null) second.child.kill('SIGKILL');
  });
  await waitReady(second, base);
  t.notMatch(second.stdout(), /\bbh_[A-Za-z0-9_-]{20,}/, 'no new key printed on the second start');
  const again = await fetch(`${base}/v1/connections/survivor`, { headers: auth });
  t.equal(again.status, 200, 'the old key still works');
  t.same(await again.json(), conn, 'the connection survived');
  // the generated encryption key survived too: the sealed password can be opened (test reaches PostgreSQL)
  const tested = await fetch(`${base}/v1/connections/survivor/test`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
  t.equal(tested.status, 200);
  t.equal(((await tested.json()) as { ok: boolean }).ok, true, 'secrets still decrypt after a restart');

  const r2 = await stop(second);
  t.same(r2, { code: 0, signal: null }, 'SIGTERM again: exits 0');
  t.notMatch(first.stderr() + second.stderr(), /Error|error/, 'nothing on stderr');
  t.equal(r1.signal, null, 'not killed: it stopped by itself after SIGTERM');

  // The API alone (no worker) shuts down cleanly: exit 0, nothing on stderr.
  const third = serve(dataDir, port, ['--no-worker']);
  t.teardown(() => {
    if (third.child.exitCode === null) third.child.kill('SIGKILL');
  });
  await waitReady(third, base);
  t.equal((await fetch(`${base}/v1/connections/survivor`, { headers: auth })).status, 200);
  t.same(await stop(third), { code: 0, signal: null }, 'serve --no-worker: SIGTERM exits 0');
  t.equal(third.stderr(), '', 'nothing on stderr');
  t.notMatch(third.stdout(), /\bbh_[A-Za-z0-9_-]{20,}/, 'no key printed');
});
