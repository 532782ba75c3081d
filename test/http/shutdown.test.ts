import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { freePort } from '../../src/db/embedded.ts';
import { freshDatabase } from '../helpers/backhaul.ts';

// Start-up and shutdown as an operator sees them: SIGTERM and Ctrl-C (SIGINT to the whole process
// group) run Backhaul's own graceful shutdown and exit 0 with nothing on stderr; the embedded
// PostgreSQL is outside the group and stops last; a port in use is the first and only error line;
// one "Server listening" line; request log lines at BACKHAUL_REQUEST_LOG_LEVEL.

const ROOT = new URL('../..', import.meta.url).pathname;

function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (['DATABASE_URL', 'BACKHAUL_BOOTSTRAP_API_KEY', 'BACKHAUL_ENCRYPTION_KEY', 'BACKHAUL_DATA_DIR', 'PORT', 'HOST', 'NODE_OPTIONS', 'LOG_LEVEL'].includes(k)) continue;
    if (k.startsWith('TAP') || k.startsWith('_TAPJS')) continue;
    env[k] = v;
  }
  return { ...env, HOST: '127.0.0.1', LOG_LEVEL: 'info', ...extra };
}

interface Proc {
  child: ChildProcess;
  out: () => string;
  err: () => string;
  exited: Promise<{ code: number | null; signal: string | null }>;
}

/** `backhaul <args>` in its own process group (as a terminal starts it). */
function backhaul(args: string[], env: NodeJS.ProcessEnv, t: { teardown(fn: () => void): void }): Proc {
  const child = spawn(process.execPath, ['src/cli.ts', ...args], { cwd: ROOT, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<{ code: number | null; signal: string | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })));
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) process.kill(-child.pid!, 'SIGKILL');
  });
  return { child, out: () => out, err: () => err, exited };
}

async function ready(p: Proc, port: number): Promise<void> {
  for (let i = 0; i < 1200; i++) {
    if (p.child.exitCode !== null) throw new Error(`exited early:\n${p.out()}\n${p.err()}`);
    const status = await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.status, () => 0);
    if (status === 200) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`not ready:\n${p.out()}\n${p.err()}`);
}

/** Stops a cluster left running by a Backhaul that a failed test killed (PostgreSQL has its own session). */
function stopOrphan(dataDir: string): void {
  try {
    const pid = Number(readFileSync(join(dataDir, 'pg/postmaster.pid'), 'utf8').split('\n')[0]);
    if (pid > 0) process.kill(pid, 'SIGQUIT');
  } catch {
    // none left
  }
}

const logLines = (out: string) => out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { level: number; msg: string });

t.test('serve with DATABASE_URL: SIGTERM shuts down gracefully and exits 0; one "Server listening" line', async (t) => {
  const port = await freePort();
  const p = backhaul(['serve'], cleanEnv({ DATABASE_URL: await freshDatabase(t), BACKHAUL_ENCRYPTION_KEY: randomBytes(32).toString('base64'), PORT: String(port) }), t);
  await ready(p, port);
  p.child.kill('SIGTERM');
  t.same(await p.exited, { code: 0, signal: null });
  const msgs = logLines(p.out()).map((l) => l.msg);
  t.same(msgs.filter((m) => /listening/i.test(m)), [`Server listening at http://127.0.0.1:${port}`], 'one line says where it listens');
  t.ok(msgs.includes('shutting down') && msgs.at(-1) === 'Backhaul stopped', 'the shutdown is logged to its end');
  t.ok(msgs.includes('incoming request') && msgs.includes('request completed'), 'request lines at info by default');
  t.equal(p.err(), '');
});

t.test('BACKHAUL_REQUEST_LOG_LEVEL turns the request lines down, and only them', async (t) => {
  const port = await freePort();
  const env = cleanEnv({ DATABASE_URL: await freshDatabase(t), BACKHAUL_ENCRYPTION_KEY: randomBytes(32).toString('base64'), PORT: String(port), BACKHAUL_REQUEST_LOG_LEVEL: 'debug' });
  const p = backhaul(['serve', '--no-worker'], env, t);
  await ready(p, port);
  t.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
  p.child.kill('SIGTERM');
  t.same(await p.exited, { code: 0, signal: null });
  const msgs = logLines(p.out()).map((l) => l.msg);
  t.notOk(msgs.some((m) => /request/.test(m)), 'no request line at info');
  t.ok(msgs.includes(`Server listening at http://127.0.0.1:${port}`) && msgs.includes('Backhaul stopped'), 'the rest is still there');
});

t.test('a port already in use is the first and only error line, before anything starts', async (t) => {
  const taken = createServer().listen(0, '127.0.0.1');
  await once(taken, 'listening');
  t.teardown(() => taken.close());
  const port = (taken.address() as AddressInfo).port;
  const dataDir = mkdtempSync(join(tmpdir(), 'bh-busy-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  for (const [mode, extra] of [
    ['DATABASE_URL', { DATABASE_URL: await freshDatabase(t), BACKHAUL_ENCRYPTION_KEY: randomBytes(32).toString('base64') }],
    ['embedded', { BACKHAUL_DATA_DIR: dataDir }],
  ] as const) {
    const p = backhaul(['serve'], cleanEnv({ ...extra, PORT: String(port) }), t);
    t.same(await p.exited, { code: 1, signal: null }, `${mode}: exit 1`);
    t.equal(p.err(), `backhaul: port ${port} on 127.0.0.1 is already in use (PORT): stop what uses it, or choose another port with PORT.\n`, `${mode}: one line on stderr`);
    t.equal(p.out(), '', `${mode}: nothing else`);
  }
  t.notOk(existsSync(join(dataDir, 'pg')), 'the embedded database was not started');
});

t.test('embedded: Ctrl-C (SIGINT to the process group) stops Backhaul first, PostgreSQL last, quietly', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'bh-ctrl-c-'));
  t.teardown(() => {
    stopOrphan(dataDir);
    rmSync(dataDir, { recursive: true, force: true });
  });
  const port = await freePort();
  const p = backhaul(['serve'], cleanEnv({ BACKHAUL_DATA_DIR: dataDir, PORT: String(port) }), t);
  await ready(p, port);
  const postmasterPid = Number(readFileSync(join(dataDir, 'pg/postmaster.pid'), 'utf8').split('\n')[0]);
  const pgid = (pid: number) => Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')[2]);
  t.not(pgid(postmasterPid), pgid(p.child.pid!), 'PostgreSQL runs in a process group of its own');
  t.match(JSON.parse(readFileSync(join(dataDir, 'embedded-pg.json'), 'utf8')), { pid: p.child.pid, postmasterPid }, 'the data directory names its owner and port');

  process.kill(-p.child.pid!, 'SIGINT');
  t.same(await p.exited, { code: 0, signal: null }, 'exit 0');
  t.equal(p.err(), '', 'nothing on stderr');
  const lines = logLines(p.out());
  t.same(lines.filter((l) => l.level >= 50), [], 'no error logged');
  t.equal(lines.at(-1)?.msg, 'Backhaul stopped');
  const pgLog = readFileSync(join(dataDir, 'postgresql.log'), 'utf8');
  t.equal(pgLog.match(/received fast shutdown request/g)?.length, 1, 'PostgreSQL got one shutdown request (from Backhaul, not from the terminal)');
  t.notMatch(pgLog, /terminating connection due to administrator command/, 'with no connection left to cut: Backhaul had closed them');
  t.notOk(existsSync(join(dataDir, 'pg/postmaster.pid')), 'and it is stopped');
  t.notOk(existsSync(join(dataDir, 'embedded-pg.json')), 'its owner record is gone');
});
