import { createServer, connect, type Server, type Socket } from 'node:net';

// A TCP proxy in front of a real server (PostgreSQL, MariaDB, an HTTP fake), to simulate what
// the network does to a connection without touching the shared server: cut every connection
// (a reset, as a dead peer or a restarted proxy sends), stall traffic (pause/resume: a
// black-holed route), and count bytes so a test can cut "mid-read" by waiting for data first.

export interface TcpProxy {
  readonly host: string;
  readonly port: number;
  /** Connections currently open through the proxy. */
  readonly open: number;
  /** Connections accepted since the start. */
  readonly accepted: number;
  /** Bytes forwarded from the upstream server to clients since the start. */
  readonly bytesDown: number;
  /** Bytes forwarded from clients to the upstream server since the start. */
  readonly bytesUp: number;
  /** Resets every open connection on both sides (clients see ECONNRESET). New connections still work. */
  cutAll(): void;
  /** Stops forwarding in both directions (open and new connections) until resume(); nothing is lost. */
  pause(): void;
  resume(): void;
  /** Resolves when `predicate()` holds, checked after every forwarded chunk and connection change. */
  waitFor(predicate: () => boolean, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

interface Pair {
  client: Socket;
  upstream?: Socket;
  /** Chunks held while paused, per direction. */
  up: Buffer[];
  down: Buffer[];
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const pairs = new Set<Pair>();
  const waiters = new Set<() => void>();
  let paused = false;
  let accepted = 0;
  let bytesDown = 0;
  let bytesUp = 0;
  const notify = () => {
    for (const w of [...waiters]) w();
  };

  const forward = (p: Pair, dir: 'up' | 'down', chunk: Buffer) => {
    if (paused) {
      p[dir].push(chunk);
      return;
    }
    const to = dir === 'up' ? p.upstream : p.client;
    if (!to || to.destroyed) {
      p[dir].push(chunk);
      return;
    }
    to.write(chunk);
    if (dir === 'up') bytesUp += chunk.length;
    else bytesDown += chunk.length;
    notify();
  };

  const flush = (p: Pair) => {
    for (const dir of ['up', 'down'] as const) {
      const held = p[dir].splice(0);
      for (const c of held) forward(p, dir, c);
    }
  };

  const drop = (p: Pair) => {
    if (!pairs.delete(p)) return;
    p.client.destroy();
    p.upstream?.destroy();
    notify();
  };

  const openUpstream = (p: Pair) => {
    const up = connect(target.port, target.host);
    p.upstream = up;
    up.on('connect', () => flush(p));
    up.on('data', (c: Buffer) => forward(p, 'down', c));
    up.on('error', () => drop(p));
    up.on('close', () => drop(p));
  };

  const server: Server = createServer((client) => {
    accepted++;
    const p: Pair = { client, up: [], down: [] };
    pairs.add(p);
    client.on('data', (c: Buffer) => forward(p, 'up', c));
    client.on('error', () => drop(p));
    client.on('close', () => drop(p));
    // A paused proxy also black-holes new connections: the upstream is dialled on resume.
    if (!paused) openUpstream(p);
    notify();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as { port: number }).port;

  return {
    host: '127.0.0.1',
    port,
    get open() {
      return pairs.size;
    },
    get accepted() {
      return accepted;
    },
    get bytesDown() {
      return bytesDown;
    },
    get bytesUp() {
      return bytesUp;
    },
    cutAll() {
      for (const p of [...pairs]) {
        pairs.delete(p);
        p.client.resetAndDestroy();
        if (p.upstream && !p.upstream.destroyed) p.upstream.resetAndDestroy();
      }
      notify();
    },
    pause() {
      paused = true;
    },
    resume() {
      paused = false;
      for (const p of pairs) {
        if (!p.upstream) openUpstream(p);
        else flush(p);
      }
      notify();
    },
    waitFor(predicate, timeoutMs = 30_000) {
      if (predicate()) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const check = () => {
          if (!predicate()) return;
          cleanup();
          resolve();
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`tcp proxy: condition not met within ${timeoutMs} ms`));
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
      });
    },
    async close() {
      for (const p of [...pairs]) drop(p);
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
