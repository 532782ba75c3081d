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
  /** Bytes forwarded from the upstream server to clients since the start (forwarding honours backpressure). */
  readonly bytesDown: number;
  /** Bytes forwarded from clients to the upstream server since the start. */
  readonly bytesUp: number;
  /** Resets every open connection on both sides (clients see ECONNRESET). New connections still work. */
  cutAll(): void;
  /** Stops forwarding in both directions (open and new connections) until resume(); nothing is lost. */
  pause(): void;
  resume(): void;
  /**
   * Resets every open connection the moment a chunk travelling `dir` ('up': client to server) for
   * which `match(chunk)` holds arrives: before it is forwarded (`when: 'before'`, the default: the
   * server never sees it) or right after (`'after'`: the server got it, its answer is lost).
   * `only: 'this'` resets just the connection that carried the chunk. Fires once; resolves when it fired.
   */
  cutOn(dir: 'up' | 'down', match: (chunk: Buffer) => boolean, opts?: { when?: 'before' | 'after'; only?: 'all' | 'this' }): Promise<void>;
  /** Resolves once a chunk travelling `dir` for which `match(chunk)` holds has been forwarded. */
  sees(dir: 'up' | 'down', match: (chunk: Buffer) => boolean): Promise<void>;
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

  let trigger: { dir: 'up' | 'down'; match: (c: Buffer) => boolean; when: 'before' | 'after'; only: 'all' | 'this'; fired: () => void } | undefined;
  const watchers = new Set<{ dir: 'up' | 'down'; match: (c: Buffer) => boolean; seen: () => void }>();
  const cutAll = (which: Iterable<Pair> = [...pairs]) => {
    for (const p of which) {
      pairs.delete(p);
      p.client.resetAndDestroy();
      if (p.upstream && !p.upstream.destroyed) p.upstream.resetAndDestroy();
    }
    notify();
  };

  const forward = (p: Pair, dir: 'up' | 'down', chunk: Buffer) => {
    const t = trigger && trigger.dir === dir && trigger.match(chunk) ? trigger : undefined;
    if (t) {
      trigger = undefined;
      if (t.when === 'after') forward(p, dir, chunk);
      cutAll(t.only === 'this' ? [p] : undefined);
      t.fired();
      return;
    }
    if (!pairs.has(p)) return; // cut: nothing more crosses
    if (paused) {
      p[dir].push(chunk);
      return;
    }
    const to = dir === 'up' ? p.upstream : p.client;
    if (!to || to.destroyed) {
      p[dir].push(chunk);
      return;
    }
    // Backpressure, as TCP has it: a receiver that stops reading stops its sender once the
    // buffers between them are full (else the proxy would read the whole answer into memory and
    // count bytes the client never asked for).
    if (!to.write(chunk)) {
      const from = dir === 'up' ? p.client : p.upstream;
      if (from && !from.isPaused()) {
        from.pause();
        to.once('drain', () => {
          if (!from.destroyed) from.resume();
        });
      }
    }
    for (const w of [...watchers]) {
      if (w.dir !== dir || !w.match(chunk)) continue;
      watchers.delete(w);
      w.seen();
    }
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
      cutAll();
    },
    sees(dir, match) {
      return new Promise<void>((resolve) => {
        watchers.add({ dir, match, seen: resolve });
      });
    },
    cutOn(dir, match, { when = 'before', only = 'all' } = {}) {
      return new Promise<void>((resolve) => {
        trigger = { dir, match, when, only, fired: resolve };
      });
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
