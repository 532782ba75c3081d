import { spawn, type ChildProcess } from 'node:child_process';
import { freePort } from '../../src/db/embedded.ts';
import type { TestBackhaul } from '../helpers/backhaul.ts';

// A Backhaul process of its own (`node src/cli.ts serve|worker`), as an operator runs it, with
// its log lines captured (JSON, one per line) so a test can wait for what it logged and see how
// it exited.

export interface Spawned {
  child: ChildProcess;
  /** The API's base URL (serve only). */
  url: string;
  /** stdout and stderr lines, in order. */
  lines: string[];
  /** Resolves with the exit code or signal once the process exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  /** Waits until a log line matches (the line is returned), or throws after timeoutMs. */
  waitForLine(re: RegExp, timeoutMs?: number, from?: number): Promise<string>;
  request(method: string, path: string, opts?: { body?: unknown; token?: string | null }): Promise<{ status: number; headers: Headers; body: any; text: string }>;
  kill9(): Promise<void>;
  /** SIGTERM and wait for the exit. */
  stop(): Promise<void>;
}

export async function spawnBackhaul(
  h: TestBackhaul,
  command: 'serve' | 'worker',
  opts: { databaseUrl?: string; env?: Record<string, string>; logLevel?: string; nodeArgs?: string[] } = {},
): Promise<Spawned> {
  const port = command === 'serve' ? await freePort() : 0;
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), 'src/cli.ts', command], {
    env: {
      ...process.env,
      DATABASE_URL: opts.databaseUrl ?? h.databaseUrl,
      BACKHAUL_ENCRYPTION_KEY: h.bh.config.encryptionKey,
      HOST: '127.0.0.1',
      PORT: String(port),
      LOG_LEVEL: opts.logLevel ?? 'warn',
      ...opts.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const waiters = new Set<() => void>();
  const onData = (prefix: string) => {
    let rest = '';
    return (chunk: Buffer) => {
      const parts = (rest + chunk.toString('utf8')).split('\n');
      rest = parts.pop() ?? '';
      for (const p of parts) if (p.trim()) lines.push(prefix + p);
      for (const w of waiters) w();
    };
  };
  child.stdout!.on('data', onData(''));
  child.stderr!.on('data', onData(''));
  let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      exit = { code, signal };
      for (const w of waiters) w();
      resolve(exit);
    }),
  );
  const url = `http://127.0.0.1:${port}`;
  const s: Spawned = {
    child,
    url,
    lines,
    exited,
    get exit() {
      return exit;
    },
    waitForLine(re, timeoutMs = 120_000, from = 0) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const hit = lines.slice(from).find((l) => re.test(l));
          if (hit !== undefined) return done(() => resolve(hit));
          if (exit) return done(() => reject(new Error(`process exited (${JSON.stringify(exit)}) before logging ${re}:\n${lines.slice(-20).join('\n')}`)));
        };
        const timer = setTimeout(() => done(() => reject(new Error(`no log line ${re} within ${timeoutMs} ms:\n${lines.slice(-20).join('\n')}`))), timeoutMs);
        const done = (f: () => void) => {
          clearTimeout(timer);
          waiters.delete(check);
          f();
        };
        waiters.add(check);
        check();
      });
    },
    async request(method, path, o = {}) {
      const headers: Record<string, string> = {};
      const tok = o.token === undefined ? h.token : o.token;
      if (tok) headers.authorization = `Bearer ${tok}`;
      let body: string | undefined;
      if (o.body !== undefined) {
        body = JSON.stringify(o.body);
        headers['content-type'] = 'application/json';
      }
      const res = await fetch(url + path, { method, headers, body, signal: AbortSignal.timeout(30_000) });
      const text = await res.text();
      let parsed: unknown = text;
      try {
        parsed = text ? JSON.parse(text) : null;
      } catch {
        // not JSON
      }
      return { status: res.status, headers: res.headers, body: parsed, text };
    },
    async kill9() {
      if (exit) return;
      child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      if (exit) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(t);
    },
  };
  return s;
}

/** Polls `fn` until it returns a truthy value (returned), or throws after timeoutMs. */
export async function until<T>(what: string, fn: () => Promise<T | undefined | false | null> | T | undefined | false | null, timeoutMs = 120_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
