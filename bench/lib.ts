import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { createInterface } from 'node:readline';

// Small helpers of the benchmark: child processes, their memory, a REST client.

export interface Proc {
  child: ChildProcess;
  /** Resolves with the first stdout line that parses as JSON (processes announce readiness so). */
  firstJson: Promise<any>;
  /** Resolves with the last JSON line once the process exits with 0; rejects otherwise. */
  done: Promise<any>;
  stderr: string[];
}

export function spawnNode(args: string[], env: Record<string, string | undefined> = {}): Proc {
  const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const stderr: string[] = [];
  child.stderr!.on('data', (c: Buffer) => {
    stderr.push(String(c));
    if (stderr.length > 200) stderr.shift();
  });
  let last: any;
  let resolveFirst!: (v: any) => void;
  let rejectFirst!: (e: Error) => void;
  const firstJson = new Promise<any>((res, rej) => {
    resolveFirst = res;
    rejectFirst = rej;
  });
  firstJson.catch(() => {});
  createInterface({ input: child.stdout! }).on('line', (line) => {
    try {
      last = JSON.parse(line);
      resolveFirst(last);
    } catch {
      // not ours (e.g. a log line)
    }
  });
  const done = new Promise<any>((res, rej) => {
    child.on('exit', (code, signal) => {
      const err = new Error(`${args.join(' ')} exited with ${code ?? signal}: ${stderr.join('').slice(-2000)}`);
      rejectFirst(err);
      if (code === 0) res(last);
      else rej(err);
    });
  });
  done.catch(() => {});
  return { child, firstJson, done, stderr };
}

export async function stop(p: Proc | undefined, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!p || p.child.exitCode !== null || p.child.signalCode !== null) return;
  const exited = new Promise((r) => p.child.once('exit', r));
  p.child.kill(signal);
  const t = setTimeout(() => p.child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(t);
}

/** Peak and current resident set size of a process, in MB (from /proc/<pid>/status). */
export function memoryOf(pid: number): { hwmMb: number; rssMb: number } | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? 0);
    return { hwmMb: kb('VmHWM') / 1024, rssMb: kb('VmRSS') / 1024 };
  } catch {
    return undefined;
  }
}

/**
 * Waits until a process is idle: less than 20 ms of CPU over a second (its background work after a
 * run, such as loading the comparison table it keeps, counts in a memory peak), at most `maxMs`.
 */
export async function quiescent(pid: number, maxMs = 20_000): Promise<void> {
  const cpu = () => {
    try {
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
      return (Number(f[11]) + Number(f[12])) * 10; // utime + stime, in ticks of 10 ms
    } catch {
      return undefined;
    }
  };
  const end = Date.now() + maxMs;
  let last = cpu();
  while (last !== undefined && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 1000));
    const now = cpu();
    if (now === undefined || now - last < 20) return;
    last = now;
  }
}

/** Samples a process's RSS every `everyMs` until stopped; returns the highest seen and VmHWM. */
export function sampleRss(pid: number, everyMs = 100) {
  let maxRss = 0;
  const t0 = Date.now();
  /** [seconds since start, RSS MB], about every second: where in the run memory grows. */
  const timeline: [number, number][] = [];
  const t = setInterval(() => {
    const m = memoryOf(pid);
    if (!m) return;
    maxRss = Math.max(maxRss, m.rssMb);
    const s = Math.floor((Date.now() - t0) / 1000);
    if (!timeline.length || timeline[timeline.length - 1][0] < s) timeline.push([s, Math.round(m.rssMb)]);
  }, everyMs);
  return {
    stop() {
      clearInterval(t);
      const m = memoryOf(pid);
      return { peakMb: Math.max(maxRss, m?.hwmMb ?? 0, m?.rssMb ?? 0), sampledMaxRssMb: maxRss, vmHwmMb: m?.hwmMb ?? 0, timeline };
    },
  };
}

export interface Api {
  url: string;
  token: string;
  req(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }>;
  ok(method: string, path: string, body?: unknown): Promise<any>;
}

export function apiClient(url: string, token: string): Api {
  const api: Api = {
    url,
    token,
    async req(method, path, body) {
      const res = await fetch(url + path, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      return { status: res.status, body: text ? JSON.parse(text) : null };
    },
    async ok(method, path, body) {
      const r = await api.req(method, path, body);
      if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
      return r.body;
    },
  };
  return api;
}

/** Runs `fn` over `items`, at most `limit` at a time. */
export async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i], i);
      }
    }),
  );
  return out;
}

/** A timestamptz as PostgreSQL's text output writes it ("2024-05-01 12:00:00.123456+00"), in ms. */
export function parsePgTimestamp(s: string): number {
  return Date.parse(s.replace(' ', 'T').replace(/([+-]\d\d)$/, '$1:00'));
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs: number, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

export const TERMINAL = ['succeeded', 'partially_succeeded', 'failed', 'cancelled'];

export function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

export const round = (n: number, d = 2) => Math.round(n * 10 ** d) / 10 ** d;

// ---------------------------------------------------------------------------------------------
// A metering proxy for the PostgreSQL wire protocol (used by the scheduler scenario).
//
// A process connects to the proxy instead of the server; the proxy passes every byte through
// unchanged and, per connection, times each request cycle (Query, or Parse/Bind/Execute…Sync)
// from the moment the proxy forwards it to the server's ReadyForQuery. Cycles pipelined on one
// connection are timed back to back (a cycle starts when it is sent or when the previous one
// ended, whichever is later), so the sum is the time the server spent on that connection's
// requests, plus loopback hops. Each cycle is attributed to a label by `classify`; the cycles
// of one transaction (ReadyForQuery status 'T' until 'I') are labelled as one unit.
// graphile-worker's get_job responses are read (job id, task id) so that fetches, completions
// and failures can be attributed to the task of the job they concern.

export interface MeterStatement {
  sql: string;
  /** Prepared statement name (graphile-worker names its statements, e.g. get_job/graphile_worker). */
  name: string;
  params: (string | null)[];
}
export interface MeterUnit {
  /** application_name from the connection's startup message. */
  app: string;
  statements: MeterStatement[];
  /** For graphile-worker job statements: the task id of the job fetched / completed / failed. */
  taskId?: number;
  /** get_job only: whether it returned a job. */
  fetched?: boolean;
}
export interface MeterCounter {
  count: number;
  /** Time with a request in flight (what pg_stat_statements' total_exec_time would count, plus loopback hops). */
  ms: number;
  roundTrips: number;
  /** The backend's CPU time over the same cycles (/proc/<pid>/schedstat; 0 when not readable). */
  cpuMs: number;
  /** The backend's time waiting for a CPU (run queue) over the same cycles. */
  waitMs: number;
}
export interface MeterSnapshot {
  at: number;
  connections: number;
  /** Connections passed through unmeasured (encrypted, or a stream the meter could not parse). */
  unmeasured: number;
  labels: Record<string, MeterCounter>;
  /** Per statement text (first 160 characters, whitespace folded). */
  statements: Record<string, MeterCounter>;
}

export interface PgMeter {
  port: number;
  /** Whether the backends' CPU time is measured (the server runs on this machine, /proc readable). */
  cpu(): boolean;
  snapshot(): MeterSnapshot;
  close(): Promise<void>;
}

const PROTOCOL_3 = 196608;
const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;

function cstring(b: Buffer, at: number): [string, number] {
  const end = b.indexOf(0, at);
  return [b.toString('utf8', at, end), end + 1];
}

/** Splits a byte stream into protocol messages; `untyped` messages (startup) have no type byte. */
class Framer {
  private buf: Buffer = Buffer.alloc(0);
  untyped = 0;
  rawBytes = 0;
  private readonly on: (type: string, body: Buffer) => void;
  constructor(on: (type: string, body: Buffer) => void) {
    this.on = on;
  }
  push(chunk: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    let at = 0;
    for (;;) {
      if (this.rawBytes > 0) {
        if (at >= this.buf.length) break;
        this.on('raw', this.buf.subarray(at, at + 1));
        this.rawBytes--;
        at++;
        continue;
      }
      if (this.untyped > 0) {
        if (this.buf.length - at < 4) break;
        const len = this.buf.readInt32BE(at);
        if (this.buf.length - at < len) break;
        this.untyped--;
        this.on('startup', this.buf.subarray(at + 4, at + len));
        at += len;
        continue;
      }
      if (this.buf.length - at < 5) break;
      const len = this.buf.readInt32BE(at + 1);
      if (this.buf.length - at < 1 + len) break;
      this.on(String.fromCharCode(this.buf[at]), this.buf.subarray(at + 5, at + 1 + len));
      at += 1 + len;
    }
    this.buf = at >= this.buf.length ? Buffer.alloc(0) : Buffer.from(this.buf.subarray(at));
  }
}

export function startPgMeter(
  upstream: { host: string; port: number },
  classify: (u: MeterUnit) => string,
  /** Called with each job graphile-worker's get_job returns (its id, task_id, run_at, locked_at as text). */
  onFetch?: (job: Record<string, string | null>) => void,
): Promise<PgMeter> {
  const labels = new Map<string, MeterCounter>();
  const statements = new Map<string, MeterCounter>();
  const jobTasks = new Map<string, number>(); // graphile-worker job id → task id
  let connections = 0;
  let unmeasured = 0;
  let cpuSeen = false;
  const add = (m: Map<string, MeterCounter>, k: string, ms: number, roundTrips: number, cpuMs: number, waitMs: number) => {
    const c = m.get(k) ?? { count: 0, ms: 0, roundTrips: 0, cpuMs: 0, waitMs: 0 };
    c.count += 1;
    c.ms += ms;
    c.roundTrips += roundTrips;
    c.cpuMs += cpuMs;
    c.waitMs += waitMs;
    m.set(k, c);
  };
  /** Adds CPU found after a unit was counted (see settleTail) to its label and statement. */
  const addCpu = (m: Map<string, MeterCounter>, k: string, cpuMs: number, waitMs: number) => {
    const c = m.get(k);
    if (!c) return;
    c.cpuMs += cpuMs;
    c.waitMs += waitMs;
  };
  /** [CPU ns, run-queue wait ns] of a backend process, when it runs on this machine. */
  const schedstat = (pid: number | undefined): [number, number] | undefined => {
    if (!pid) return undefined;
    try {
      const [run, wait] = readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ').map(Number);
      cpuSeen = true;
      return [run, wait];
    } catch {
      return undefined;
    }
  };
  const sockets = new Set<net.Socket>();

  const server = net.createServer((client) => {
    connections++;
    const up = net.connect(upstream.port, upstream.host);
    sockets.add(client);
    sockets.add(up);
    client.setNoDelay(true);
    up.setNoDelay(true);
    let app = '';
    /** Not parsed (encrypted, or not understood): bytes pass through unmeasured. */
    let opaque = false;
    const setOpaque = () => {
      if (!opaque) unmeasured++;
      opaque = true;
    };
    let backendPid: number | undefined;
    /** schedstat when last read for this connection. */
    let mark: [number, number] | undefined;
    /** Where CPU read after the last ReadyForQuery belongs: the unit (or transaction) it ended. */
    let tailTo: ((cpuMs: number, waitMs: number) => void) | undefined;
    /**
     * The kernel adds a running task's current time slice to schedstat when it is switched out, so
     * the reading at ReadyForQuery can miss the end of the statement. When the next request comes
     * on the idle connection (before it is forwarded) the backend has blocked: read again and
     * give the difference to the statement before.
     */
    const settleTail = () => {
      if (!tailTo || !mark) return;
      const now = schedstat(backendPid);
      if (!now) return;
      tailTo((now[0] - mark[0]) / 1e6, (now[1] - mark[1]) / 1e6);
      mark = now;
      tailTo = undefined;
    };
    const prepared = new Map<string, string>();
    interface Cycle {
      /** When the server's part started (Infinity while the client is the one to act). */
      t0: number;
      /** Server time already accounted (a describe answered before Bind, the start of a COPY). */
      preMs: number;
      /** Queued for its answer ahead of Sync (Flush after Parse/Describe, postgres.js's describe-first). */
      flushed?: boolean;
      /** In `inflight`, awaiting the server's answer. */
      queued?: boolean;
      statements: MeterStatement[];
      lastParsed?: string;
      getJob?: boolean;
      columns?: string[];
      row?: Record<string, string | null>;
      ms?: number;
      cpuMs?: number;
      waitMs?: number;
    }
    let open: Cycle | undefined;
    const inflight: Cycle[] = [];
    let lastEnd = 0;
    let txn: { cycles: Cycle[]; ms: number; cpuMs: number; waitMs: number } | undefined;
    const openCycle = () => {
      open ??= { t0: performance.now(), preMs: 0, statements: [] };
      if (open.t0 === Infinity) open.t0 = performance.now();
      return open;
    };
    /** The server's part of a cycle is over until the client acts again (not counted meanwhile). */
    const pause = (c: Cycle) => {
      const now = performance.now();
      c.preMs += now - Math.max(c.t0, lastEnd);
      lastEnd = now;
      c.t0 = Infinity;
    };

    const finishUnit = (cycles: Cycle[], ms: number, cpuMs: number, waitMs: number): { label: string; lastKey: string } => {
      const unit: MeterUnit = { app, statements: cycles.flatMap((c) => c.statements) };
      const gj = cycles.find((c) => c.getJob);
      if (gj) {
        unit.fetched = !!gj.row;
        if (gj.row?.id) {
          const taskId = Number(gj.row.task_id);
          jobTasks.set(gj.row.id, taskId);
          unit.taskId = taskId;
          onFetch?.(gj.row);
        }
      } else {
        // complete_job(s)/fail_job(s)/return_job(s): the job's task, from the job id among the
        // parameters (an id array '{"1","2"}', an id, or JSON with "jobId"; never the pool id).
        for (const s of unit.statements) {
          if (!/^(complete|fail|return)_job/.test(s.name)) continue;
          const ids = s.params.flatMap((p) =>
            p === null ? [] : /^[\d,{}"]+$/.test(p) ? (p.match(/\d+/g) ?? []) : [...p.matchAll(/"jobId":"?(\d+)/g)].map((m) => m[1]),
          );
          for (const id of ids) {
            const t = jobTasks.get(id);
            if (t === undefined) continue;
            unit.taskId ??= t;
            if (!s.name.startsWith('fail')) jobTasks.delete(id);
          }
        }
      }
      const label = classify(unit);
      add(labels, label, ms, cycles.length, cpuMs, waitMs);
      let lastKey = '';
      for (const c of cycles) {
        const text = c.statements.map((s) => s.sql).join('; ') || '(prepare)';
        // Ids in statement text (per-run staging tables) are folded so that statements aggregate.
        lastKey = (c.statements[0]?.name ? `[${c.statements[0].name}] ` : '') + text.replace(/\s+/g, ' ').replace(/([a-z]+)_[0-9a-z]{26}(?![0-9a-z])/g, '$1_…').slice(0, 160);
        add(statements, lastKey, c.ms ?? 0, 1, c.cpuMs ?? 0, c.waitMs ?? 0);
      }
      return { label, lastKey };
    };

    const front = new Framer((type, body) => {
      if (type === 'startup') {
        const code = body.readInt32BE(0);
        if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
          back.rawBytes++;
          front.untyped++;
        } else if (code === PROTOCOL_3) {
          const parts = body.toString('utf8', 4).split('\0');
          for (let i = 0; i + 1 < parts.length; i += 2) if (parts[i] === 'application_name') app = parts[i + 1];
        }
        return;
      }
      switch (type) {
        case 'Q': {
          const c = openCycle();
          c.statements.push({ sql: cstring(body, 0)[0], name: '', params: [] });
          c.queued = true;
          inflight.push(c);
          open = undefined;
          break;
        }
        case 'P': {
          const [name, at] = cstring(body, 0);
          const [sql] = cstring(body, at);
          if (name) prepared.set(name, sql);
          const c = openCycle();
          c.lastParsed = sql;
          if (name.startsWith('get_job')) c.getJob = true;
          break;
        }
        case 'B': {
          const c = openCycle();
          let [, at] = cstring(body, 0); // portal
          let name: string;
          [name, at] = cstring(body, at);
          const nFormats = body.readInt16BE(at);
          at += 2 + 2 * nFormats;
          const nParams = body.readInt16BE(at);
          at += 2;
          const params: (string | null)[] = [];
          for (let i = 0; i < nParams; i++) {
            const len = body.readInt32BE(at);
            at += 4;
            if (len < 0) params.push(null);
            else {
              params.push(len <= 2000 ? body.toString('utf8', at, at + len) : '');
              at += len;
            }
          }
          const sql = name ? (prepared.get(name) ?? '') : (c.lastParsed ?? '');
          if (name.startsWith('get_job')) c.getJob = true;
          c.statements.push({ sql, name, params });
          break;
        }
        case 'S': {
          const c = openCycle();
          if (!c.statements.length && c.lastParsed !== undefined) c.statements.push({ sql: c.lastParsed, name: '', params: [] });
          if (!c.queued) inflight.push(c);
          c.queued = true;
          c.flushed = false;
          open = undefined;
          break;
        }
        case 'H': {
          // Flush after Parse/Describe: the answer comes before Bind (postgres.js describes first).
          const c = openCycle();
          if (!c.queued && !c.statements.length) {
            c.flushed = true;
            c.queued = true;
            inflight.push(c);
          }
          break;
        }
        case 'c':
        case 'f': {
          // CopyDone/CopyFail: the client has streamed its COPY data; the server's part resumes.
          const c = inflight.find((x) => x.t0 === Infinity);
          if (c) c.t0 = performance.now();
          break;
        }
        case 'C': {
          // Close statement: forget it.
          if (body[0] === 0x53) prepared.delete(cstring(body, 1)[0]);
          break;
        }
        default:
          if (type !== 'X' && type !== 'd') openCycle();
      }
    });
    front.untyped = 1;

    const back = new Framer((type, body) => {
      if (type === 'raw') {
        // The answer to an SSL/GSS request: 'S'/'G' means encryption follows, which the meter
        // cannot read; the connection is then passed through without being measured.
        if (body[0] !== 0x4e) setOpaque();
        return;
      }
      if (type === 'K') {
        backendPid = body.readInt32BE(0);
        mark = schedstat(backendPid);
        return;
      }
      const head = inflight[0];
      if (head?.flushed && head.t0 !== Infinity && (type === 'T' || type === 'n' || type === 'E')) {
        // The describe is answered; the cycle waits for the client's Bind (still `open` there).
        pause(head);
        if (type !== 'E') {
          inflight.shift();
          head.queued = false;
        }
        head.flushed = false; // an error: the server discards up to Sync, then answers Z
        return;
      }
      if (type === 'G') {
        // CopyInResponse: the client streams rows at its own pace; not server time.
        if (head) pause(head);
        return;
      }
      if (type === 'T' && head?.getJob) {
        const n = body.readInt16BE(0);
        let at = 2;
        const cols: string[] = [];
        for (let i = 0; i < n; i++) {
          let name: string;
          [name, at] = cstring(body, at);
          cols.push(name);
          at += 18;
        }
        head.columns = cols;
      } else if (type === 'D' && head?.getJob && head.columns && !head.row) {
        const n = body.readInt16BE(0);
        let at = 2;
        const row: Record<string, string | null> = {};
        for (let i = 0; i < n; i++) {
          const len = body.readInt32BE(at);
          at += 4;
          const col = head.columns[i];
          if (len < 0) row[col] = null;
          else {
            if (col === 'id' || col === 'task_id' || col === 'run_at' || col === 'locked_at') row[col] = body.toString('utf8', at, at + len);
            at += len;
          }
        }
        head.row = row;
      } else if (type === 'Z') {
        const c = inflight.shift();
        if (!c) return;
        const end = performance.now();
        const ms = c.preMs + (c.t0 === Infinity ? 0 : end - Math.max(c.t0, lastEnd));
        lastEnd = end;
        c.ms = ms;
        // The backend's CPU since the last reading (the rest comes with settleTail).
        const now = schedstat(backendPid);
        c.cpuMs = now && mark ? (now[0] - mark[0]) / 1e6 : 0;
        c.waitMs = now && mark ? (now[1] - mark[1]) / 1e6 : 0;
        mark = now ?? mark;
        const status = String.fromCharCode(body[0]);
        if (status === 'I') {
          let done: { label: string; lastKey: string };
          if (txn) {
            txn.cycles.push(c);
            done = finishUnit(txn.cycles, txn.ms + ms, txn.cpuMs + c.cpuMs, txn.waitMs + c.waitMs);
            txn = undefined;
          } else done = finishUnit([c], ms, c.cpuMs, c.waitMs);
          tailTo = (cpuMs, waitMs) => {
            addCpu(labels, done.label, cpuMs, waitMs);
            addCpu(statements, done.lastKey, cpuMs, waitMs);
          };
        } else {
          const t = (txn ??= { cycles: [], ms: 0, cpuMs: 0, waitMs: 0 });
          t.cycles.push(c);
          t.ms += ms;
          t.cpuMs += c.cpuMs;
          t.waitMs += c.waitMs;
          tailTo = (cpuMs, waitMs) => {
            t.cpuMs += cpuMs;
            t.waitMs += waitMs;
            c.cpuMs! += cpuMs;
            c.waitMs! += waitMs;
          };
        }
      }
    });

    client.on('data', (chunk: Buffer) => {
      if (!opaque && !open && !inflight.length) settleTail(); // a new request on an idle connection
      up.write(chunk);
      if (opaque) return;
      try {
        front.push(chunk);
      } catch {
        setOpaque(); // never break the connection over the meter
      }
    });
    up.on('data', (chunk: Buffer) => {
      client.write(chunk);
      if (opaque) return;
      try {
        back.push(chunk);
      } catch {
        setOpaque();
      }
    });
    const end = () => {
      client.destroy();
      up.destroy();
      sockets.delete(client);
      sockets.delete(up);
    };
    client.on('error', end);
    up.on('error', end);
    client.on('close', end);
    up.on('close', end);
  });

  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const copy = (m: Map<string, MeterCounter>) => Object.fromEntries([...m].map(([k, v]) => [k, { ...v }]));
      resolve({
        port: (server.address() as net.AddressInfo).port,
        cpu: () => cpuSeen,
        snapshot: () => ({ at: performance.now(), connections, unmeasured, labels: copy(labels), statements: copy(statements) }),
        close: () =>
          new Promise<void>((res) => {
            for (const s of sockets) s.destroy();
            server.close(() => res());
          }),
      });
    });
  });
}

/** The counters accumulated between two snapshots. */
export function meterDiff(a: MeterSnapshot, b: MeterSnapshot): { seconds: number; labels: Record<string, MeterCounter>; statements: Record<string, MeterCounter> } {
  const diff = (x: Record<string, MeterCounter>, y: Record<string, MeterCounter>) =>
    Object.fromEntries(
      Object.entries(y)
        .map(([k, v]) => {
          const w = x[k] ?? { count: 0, ms: 0, roundTrips: 0, cpuMs: 0, waitMs: 0 };
          return [k, { count: v.count - w.count, ms: v.ms - w.ms, roundTrips: v.roundTrips - w.roundTrips, cpuMs: v.cpuMs - w.cpuMs, waitMs: v.waitMs - w.waitMs }] as const;
        })
        .filter(([, v]) => v.count > 0),
    );
  return { seconds: (b.at - a.at) / 1000, labels: diff(a.labels, b.labels), statements: diff(a.statements, b.statements) };
}
