import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import tap from 'tap';
import postgres from 'postgres';
import { loadConfig } from '../../src/config.ts';
import { startEmbeddedPostgres } from '../../src/db/embedded.ts';
import { startBackhaul, type Backhaul, type StartOptions } from '../../src/server.ts';

// A real Backhaul for a test file: its own PostgreSQL database (embedded, or a fresh database on
// TEST_DATABASE_URL's server), a real HTTP listener on a free port, and the log lines captured
// so tests can assert what was (not) logged.

interface Teardown {
  teardown(fn: () => unknown): void;
}

export interface TestBackhaul {
  bh: Backhaul;
  url: string;
  /** The owner/admin key of workspace `default`. */
  token: string;
  logs: string[];
  /** The control database URL (for tests that look at what is stored). */
  databaseUrl: string;
  request(method: string, path: string, opts?: { body?: unknown; rawBody?: string; token?: string | null; headers?: Record<string, string> }): Promise<TestResponse>;
}

export interface TestResponse {
  status: number;
  headers: Headers;
  body: any;
  text: string;
}

let sharedServer: Promise<{ adminUrl: string; stop: () => Promise<void> }> | undefined;

/** One PostgreSQL server per test process; each Backhaul gets a fresh database on it. */
async function pgServer(t: Teardown): Promise<{ adminUrl: string }> {
  if (process.env.TEST_DATABASE_URL) return { adminUrl: process.env.TEST_DATABASE_URL };
  if (!sharedServer) {
    sharedServer = (async () => {
      const dir = mkdtempSync(join(tmpdir(), 'bh-test-pg-'));
      const pg = await startEmbeddedPostgres({ dataDir: dir });
      return {
        adminUrl: pg.url,
        stop: async () => {
          await pg.stop();
          rmSync(dir, { recursive: true, force: true });
        },
      };
    })();
    const s = sharedServer;
    // Stopped when the whole file's tests are done (its child process would keep the file alive).
    tap.teardown(() => s.then((x) => x.stop()));
  }
  void t;
  return sharedServer;
}

export async function freshDatabase(t: Teardown): Promise<string> {
  const { adminUrl } = await pgServer(t);
  const name = `bh_test_${randomBytes(6).toString('hex')}`;
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${name}`);
  await admin.end();
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  t.teardown(async () => {
    const a = postgres(adminUrl, { max: 1, onnotice: () => {} });
    await a.unsafe(`drop database if exists ${name} with (force)`).catch(() => {});
    await a.end();
  });
  return u.toString();
}

export async function startTestBackhaul(t: Teardown, opts: { env?: Record<string, string>; start?: Partial<StartOptions> } = {}): Promise<TestBackhaul> {
  const databaseUrl = opts.env?.DATABASE_URL ?? (await freshDatabase(t));
  const token = `bh_test${randomBytes(24).toString('base64url')}`;
  const config = loadConfig({
    DATABASE_URL: databaseUrl,
    PORT: '0',
    BACKHAUL_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
    BACKHAUL_BOOTSTRAP_API_KEY: token,
    LOG_LEVEL: 'debug',
    BACKHAUL_DATA_DIR: mkdtempSync(join(tmpdir(), 'bh-data-')),
    ...opts.env,
  });
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      logs.push(String(chunk));
      cb();
    },
  });
  const logger = pino({ level: 'debug', redact: { paths: ['req.headers.authorization'], censor: '[redacted]' } }, sink);
  const bh = await startBackhaul({ config, logger, worker: false, ...opts.start });
  t.teardown(() => bh.close());
  const url = bh.url!;
  return {
    bh,
    url,
    token,
    logs,
    databaseUrl,
    async request(method, path, o = {}) {
      const headers: Record<string, string> = { ...(o.headers ?? {}) };
      const tok = o.token === undefined ? token : o.token;
      if (tok) headers.authorization = `Bearer ${tok}`;
      let body: string | undefined;
      if (o.rawBody !== undefined) body = o.rawBody;
      else if (o.body !== undefined) {
        body = JSON.stringify(o.body);
        headers['content-type'] ??= 'application/json';
      }
      const res = await fetch(url + path, { method, headers, body });
      const text = await res.text();
      let parsed: unknown = text;
      try {
        parsed = text ? JSON.parse(text) : null;
      } catch {
        // not JSON
      }
      return { status: res.status, headers: res.headers, body: parsed, text };
    },
  };
}
