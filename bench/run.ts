// npm run bench [-- --rows N] [--quick] [--strict] [--only full,full100,incremental,memory,api,latency,scheduler]
//                [--sched-syncs N] [--sched-every S] [--sched-seconds S] [--sched-workers W] [--out DIR]
//
// Measures Backhaul against baselines run in the same process tree, on the same machine, in the
// same run, and reports each figure as a ratio (absolute numbers beside). Everything it needs is
// created here: a scratch database (on BENCH_DATABASE_URL's server, else the local PostgreSQL
// on 127.0.0.1:5432, else an embedded one), the source rows, a sink process, the API and worker
// processes. Writes bench/results/latest.json and latest.svg. The scheduler scenario reports the
// database time the scheduler of N interval syncs costs per minute, measured at a metering proxy
// in front of its worker (see README).
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import postgres from 'postgres';
import { freePort, startEmbeddedPostgres } from '../src/db/embedded.ts';
import {
  apiClient,
  mapLimit,
  memoryOf,
  meterDiff,
  parsePgTimestamp,
  percentile,
  quiescent,
  round,
  sampleRss,
  sleep,
  spawnNode,
  startPgMeter,
  stop,
  TERMINAL,
  waitFor,
  type Api,
  type MeterCounter,
  type MeterUnit,
  type Proc,
} from './lib.ts';
import { chart, type Scenario } from './svg.ts';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const { values: opts } = parseArgs({
  options: {
    rows: { type: 'string' },
    quick: { type: 'boolean', default: false },
    strict: { type: 'boolean', default: false },
    only: { type: 'string' },
    'small-rows': { type: 'string' },
    'api-seconds': { type: 'string' },
    'sched-syncs': { type: 'string' },
    'sched-every': { type: 'string' },
    'sched-seconds': { type: 'string' },
    'sched-workers': { type: 'string' },
    out: { type: 'string', default: join(here, 'results') },
  },
});
const quick = opts.quick!;
const N = Number(opts.rows ?? (quick ? 20_000 : 1_000_000));
const SMALL = Number(opts['small-rows'] ?? (quick ? Math.max(1000, Math.round(N / 10)) : Math.min(100_000, Math.max(1000, Math.round(N / 10)))));
const API_SECONDS = Number(opts['api-seconds'] ?? (quick ? 3 : 10));
const TRIGGERS = quick ? 20 : 50;
const only = new Set((opts.only ?? 'full,full100,incremental,memory,api,latency,scheduler').split(','));
// Scheduler scale: syncs on interval schedules, their interval, the measured window, the idle baseline.
const SCHED_SYNCS = Number(opts['sched-syncs'] ?? (quick ? 200 : 1000));
const SCHED_EVERY = Number(opts['sched-every'] ?? (quick ? 20 : 60));
const SCHED_SECONDS = Number(opts['sched-seconds'] ?? (quick ? 20 : 120));
const SCHED_IDLE_SECONDS = quick ? 10 : 30;
// Worker processes sharing the scheduled syncs (their schedule jobs and their runs).
const SCHED_WORKERS = Number(opts['sched-workers'] ?? 1);
/** Scheduled syncs created through the API; more are copies made in SQL (see the scenario). */
const SCHED_API_SYNCS = 1000;
/** A slot fired on time: its job fetched less than this after the slot (ms). */
const ON_TIME_MS = 2000;
const BATCH = 1000;
// The small-batch throughput scenario (`full100`): 100-row batches on both sides (the HTTP
// destination's default cap, a SaaS-sized batch), where per-batch bookkeeping dominates.
const SMALL_BATCH = 100;
const SMALL_BATCH_ROWS = Math.min(N, 200_000);
const CONCURRENCY = 4;
if (!Number.isInteger(N) || N < 1000) throw new Error('--rows must be an integer ≥ 1000');
if (!Number.isInteger(SCHED_SYNCS) || SCHED_SYNCS < 1) throw new Error('--sched-syncs must be a positive integer');
if (!Number.isInteger(SCHED_EVERY) || SCHED_EVERY < 10) throw new Error('--sched-every must be an integer ≥ 10 (seconds)');
if (!(SCHED_SECONDS >= 5)) throw new Error('--sched-seconds must be ≥ 5');
if (!Number.isInteger(SCHED_WORKERS) || SCHED_WORKERS < 1) throw new Error('--sched-workers must be a positive integer');

const log = (m: string) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${m}\n`);
const scenarios: Scenario[] = [];
const cleanups: (() => Promise<unknown>)[] = [];

// ---------------------------------------------------------------------------------------------
// Database: a scratch database for the control plane and the source rows.

async function adminUrl(): Promise<string> {
  const candidates = [process.env.BENCH_DATABASE_URL, 'postgres://postgres@127.0.0.1:5432/postgres'].filter(Boolean) as string[];
  for (const u of candidates) {
    const s = postgres(u, { max: 1, onnotice: () => {}, connect_timeout: 3 });
    try {
      await s`select 1`;
      return u;
    } catch {
      // try the next
    } finally {
      await s.end();
    }
  }
  log('no PostgreSQL reachable: starting an embedded one');
  const dir = mkdtempSync(join(os.tmpdir(), 'bh-bench-pg-'));
  const pg = await startEmbeddedPostgres({ dataDir: dir });
  cleanups.push(async () => {
    await pg.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  return pg.url;
}

const COLUMNS = [
  { column: 'id', field: 'external_id', type: 'integer', bare: 'int' },
  { column: 'email', field: 'email', type: 'string', bare: 'text' },
  { column: 'first_name', field: 'first_name', type: 'string', bare: 'text' },
  { column: 'last_name', field: 'last_name', type: 'string', bare: 'text' },
  { column: 'company', field: 'company', type: 'string', bare: 'text' },
  { column: 'phone', field: 'phone', type: 'string', bare: 'text' },
  { column: 'country', field: 'country', type: 'string', bare: 'text' },
  { column: 'plan', field: 'plan', type: 'string', bare: 'text' },
  { column: 'lifetime_value', field: 'lifetime_value', type: 'decimal', bare: 'text' },
  { column: 'signed_up_at', field: 'signed_up_at', type: 'timestamp', bare: 'timestamp' },
] as const;
const MODEL_SQL = `select ${COLUMNS.map((c) => c.column).join(', ')} from src.customers`;

async function seed(sql: postgres.Sql): Promise<void> {
  await sql`create schema src`;
  await sql`create table src.customers (
    id bigint primary key, email text not null, first_name text, last_name text, company text, phone text,
    country text, plan text, lifetime_value numeric(12,2), signed_up_at timestamptz)`;
  const step = 200_000;
  for (let from = 1; from <= N; from += step) {
    const to = Math.min(N, from + step - 1);
    await sql`
      insert into src.customers
      select i, 'customer' || i || '@example.com', (array['Ada','Grace','Alan','Edsger','Barbara','Ken'])[1 + i % 6],
             'Surname' || (i % 9973), 'Company ' || (i % 5003) || ' Ltd', '+44 20 7946 ' || lpad((i % 10000)::text, 4, '0'),
             (array['GB','FR','DE','US','NL','ES','IT'])[1 + i % 7], (array['free','starter','pro','enterprise'])[1 + i % 4],
             round(((i * 7919) % 100000) / 100.0, 2), timestamptz '2020-01-01 00:00:00+00' + (i % 100000) * interval '17 minutes'
      from generate_series(${from}::bigint, ${to}::bigint) i`;
  }
  await sql`vacuum analyze src.customers`;
}

// ---------------------------------------------------------------------------------------------
// Processes

interface Env {
  databaseUrl: string;
  encryptionKey: string;
  token: string;
}

/** V8 heap flags for a worker on a big machine (V8 otherwise sizes its heap from total RAM). */
const TUNED_NODE_OPTIONS = process.env.BENCH_TUNED_NODE_OPTIONS ?? '--max-semi-space-size=4 --max-old-space-size=160';

/** The Node flags every launcher ships (`npm start`'s, kept equal to bin/ and the image by a test). */
const SHIPPED_NODE_FLAGS: string[] = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).scripts.start as string)
  .split(' ')
  .filter((a) => a.startsWith('--'));

function spawnWorker(env: Env, extraNodeOptions?: string): Proc {
  // BENCH_WORKER_NODE_OPTIONS: e.g. --cpu-prof to profile the worker.
  const nodeOptions = [process.env.BENCH_WORKER_NODE_OPTIONS, extraNodeOptions].filter(Boolean).join(' ');
  // Through the bin launcher, as shipped: it adds the worker command's own heap bound (bin/launch.js).
  return spawnNode([...SHIPPED_NODE_FLAGS, 'bin/backhaul.js', 'worker'], {
    DATABASE_URL: env.databaseUrl,
    BACKHAUL_ENCRYPTION_KEY: env.encryptionKey,
    LOG_LEVEL: 'warn',
    ...(nodeOptions ? { NODE_OPTIONS: nodeOptions } : {}),
  });
}

/** The Node flags (--…) a process runs with, from /proc/<pid>/cmdline (Linux; [] elsewhere). */
function nodeFlagsOf(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(1).filter((a) => a.startsWith('--'));
  } catch {
    return [];
  }
}

async function runSync(api: Api, syncId: string, body: Record<string, unknown> = {}, timeoutMs = 3_600_000) {
  const t0 = Date.now();
  const trig = await api.ok('POST', `/v1/syncs/${syncId}/runs`, body);
  const run = await waitFor(
    `run ${trig.id}`,
    async () => {
      const r = await api.ok('GET', `/v1/runs/${trig.id}`);
      return TERMINAL.includes(r.status) ? r : undefined;
    },
    timeoutMs,
    20,
  );
  const wallMs = Date.now() - t0;
  if (run.status !== 'succeeded') throw new Error(`run ${run.id} ended ${run.status}: ${JSON.stringify(run.error)}`);
  const phases = Object.fromEntries(
    (run.phases as { name: string; startedAt: string; finishedAt: string }[]).map((p) => [p.name, Date.parse(p.finishedAt) - Date.parse(p.startedAt)]),
  );
  return { run, wallMs, triggeredAt: t0, phases };
}

async function sinkStats(sinkUrl: string): Promise<{ requests: number; rows: number }> {
  return (await fetch(`${sinkUrl}/stats`)).json() as Promise<{ requests: number; rows: number }>;
}
async function sinkReset(sinkUrl: string): Promise<void> {
  await fetch(`${sinkUrl}/reset`, { method: 'POST' });
}

async function barePipe(databaseUrl: string, sql: string, sinkUrl: string, batchSize = BATCH) {
  const p = spawnNode([join(here, 'bare-pipe.ts'), JSON.stringify({ databaseUrl, sql, sinkUrl, batchSize, concurrency: CONCURRENCY, columns: COLUMNS.map((c) => ({ field: c.field, type: c.bare })) })]);
  const r = (await p.done) as { rows: number; requests: number; ms: number };
  return r;
}

/** Time of a bare `COPY (model query) TO STDOUT`, the rows read and thrown away. */
async function bareCopyMs(databaseUrl: string, sql: string): Promise<number> {
  const s = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    await s`select 1`;
    const t0 = performance.now();
    const stream = await s.unsafe(`copy (${sql}) to stdout`).readable();
    let bytes = 0;
    for await (const chunk of stream) bytes += (chunk as Buffer).length;
    void bytes;
    return performance.now() - t0;
  } finally {
    await s.end();
  }
}

async function cannon(url: string, token: string | undefined, seconds: number) {
  const r = await autocannon({ url, connections: 10, duration: seconds, headers: token ? { authorization: `Bearer ${token}` } : {} });
  const non2xx = r.non2xx + r.errors;
  return { rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, requests: r.requests.total, non2xx };
}

/**
 * The scheduler scenario's attribution of the worker's database round trips (see startPgMeter):
 * graphile-worker's own statements by what they do and the task of the job they concern
 * ("#<task id>", named afterwards), Backhaul's statements of the backhaul_schedule task by step
 * (a transaction counts as one unit, labelled by its most telling statement), the stale-run
 * sweep, and everything else, which in this scenario is the runs.
 */
const SHARED_SYNC_SELECT = 'select sync by id (run hooks; schedule task before it was merged)';
function schedulerLabel(u: MeterUnit): string {
  const sqls = u.statements.map((s) => s.sql);
  const has = (re: RegExp) => sqls.some((q) => re.test(q));
  const name = u.statements[0]?.name ?? '';
  if (u.app !== 'backhaul') {
    if (name.startsWith('get_job')) return u.fetched ? `job fetch #${u.taskId ?? '?'}` : 'job poll (empty)';
    const m = /^(complete|fail|return)_job/.exec(name);
    if (m) return `job ${m[1]} #${u.taskId ?? '?'}`;
    return 'graphile-worker: other (LISTEN, crontab, task ids)';
  }
  if (has(/'backhaul_schedule'/) || has(/select schedule, enabled from syncs/)) return 'schedule: replan';
  if (has(/^insert into "runs"/)) return 'schedule: trigger';
  if (has(/^\s*with s as materialized \(\s*select id, workspace_id, enabled, schedule, version, created_at from syncs/)) return 'schedule: load sync + trigger';
  if (has(/^\s*select workspace_id, enabled, schedule, version,/)) return 'schedule: load sync + active-run check';
  // (Before the two were one statement: a drizzle select of the sync, then this one.)
  if (has(/from "runs" where \("runs"\."sync_id" = \$1 and "runs"\."status" in/)) return 'schedule: active-run check';
  if (has(/^select .+ from "syncs" where "syncs"\."id" = \$1$/)) return SHARED_SYNC_SELECT;
  if (has(/heartbeat_at < now\(\)/) || has(/with orphaned as/)) return 'housekeeping: stale-run sweep';
  if (has(/lock table graphile_worker\._private_job_queues/)) return 'housekeeping: job-queue cleanup';
  return 'runs';
}

// ---------------------------------------------------------------------------------------------

function push(s: Scenario): void {
  scenarios.push(s);
  const fig = s.figure === null ? 'n/a' : String(s.figure);
  log(`${s.holds === null ? '·' : s.holds ? '✓' : '✗'} ${s.name}: ${fig} ${s.unit}${s.bar ? ` (bar ${s.bar})` : ''}`);
}

async function main(): Promise<void> {
  const started = Date.now();
  const admin = await adminUrl();
  const dbName = `backhaul_bench_${randomBytes(4).toString('hex')}`;
  const a = postgres(admin, { max: 1, onnotice: () => {} });
  await a.unsafe(`create database ${dbName}`);
  const pgVersion = (await a`show server_version`)[0].server_version as string;
  await a.end();
  cleanups.push(async () => {
    const d = postgres(admin, { max: 1, onnotice: () => {} });
    await d.unsafe(`drop database if exists ${dbName} with (force)`).catch(() => {});
    await d.end();
  });
  const u = new URL(admin);
  u.pathname = `/${dbName}`;
  const databaseUrl = u.toString();
  const env: Env = { databaseUrl, encryptionKey: randomBytes(32).toString('base64'), token: `bh_bench${randomBytes(24).toString('base64url')}` };

  const db = postgres(databaseUrl, { max: 2, onnotice: () => {} });
  cleanups.push(() => db.end());
  log(`seeding ${N.toLocaleString()} rows into ${dbName}`);
  const tSeed = Date.now();
  await seed(db);
  log(`seeded in ${((Date.now() - tSeed) / 1000).toFixed(1)} s`);

  // The sink, in its own process.
  const sink = spawnNode([join(here, 'sink.ts')]);
  cleanups.push(() => stop(sink));
  const sinkUrl = `http://127.0.0.1:${(await sink.firstJson).port}`;

  // The API, in its own process (no worker): runs execute in separate worker processes.
  const port = await freePort();
  const apiProc = spawnNode(['src/cli.ts', 'serve', '--no-worker'], {
    DATABASE_URL: databaseUrl,
    BACKHAUL_ENCRYPTION_KEY: env.encryptionKey,
    BACKHAUL_BOOTSTRAP_API_KEY: env.token,
    PORT: String(port),
    LOG_LEVEL: 'warn',
    // BENCH_API_NODE_OPTIONS: e.g. --cpu-prof to profile the API.
    ...(process.env.BENCH_API_NODE_OPTIONS ? { NODE_OPTIONS: process.env.BENCH_API_NODE_OPTIONS } : {}),
  });
  cleanups.push(() => stop(apiProc));
  const apiUrl = `http://127.0.0.1:${port}`;
  await waitFor('the API', async () => (await fetch(`${apiUrl}/readyz`)).ok, 60_000, 100);
  const api = apiClient(apiUrl, env.token);

  // Source, destination, models and syncs through the public API.
  const source = await api.ok('PUT', '/v1/connections/warehouse', {
    name: 'Warehouse',
    type: 'postgres',
    // A read of 10M rows on a loaded machine outlasts the default 5-minute statement timeout.
    config: { host: u.hostname, port: Number(u.port || 5432), database: dbName, user: decodeURIComponent(u.username), statementTimeoutMs: N > 2_000_000 ? 3_600_000 : 300_000 },
    ...(u.password ? { secrets: { password: decodeURIComponent(u.password) } } : {}),
  });
  const ok = { pointer: '/results', okField: 'ok', errorField: 'error' };
  const dest = await api.ok('PUT', '/v1/connections/sink', {
    name: 'Sink',
    type: 'http',
    config: {
      baseUrl: sinkUrl,
      maxBatchSize: 10_000,
      timeoutMs: 60_000,
      objects: [
        {
          name: 'contacts',
          fields: COLUMNS.map((c) => ({ name: c.field, type: c.type, ...(c.field === 'email' ? { identifier: true, required: true } : {}) })),
          operations: { upsert: { method: 'POST', path: '/contacts/batch/upsert', mode: 'batch', batchKey: 'inputs', results: ok } },
        },
      ],
    },
  });
  /** A sync of a new model (`sql`), or of an existing model when `sql` is its id ({ modelId }). */
  async function makeSync(slug: string, sql: string | { modelId: string }, extra: Record<string, unknown> = {}, batchSize = BATCH) {
    const model = typeof sql === 'string' ? await api.ok('PUT', `/v1/models/${slug}`, { name: slug, connectionId: source.id, sql, primaryKey: 'id' }) : { id: sql.modelId };
    const sync = await api.ok('PUT', `/v1/syncs/${slug}`, {
      ...extra,
      name: slug,
      modelId: model.id,
      destinationId: dest.id,
      object: 'contacts',
      mode: 'upsert',
      matchKey: { sourceColumn: 'email', destinationField: 'email' },
      delivery: { batchSize, concurrency: CONCURRENCY, maxRequestsPerSecond: 10_000, maxRetries: 3 },
    });
    await api.ok('PUT', `/v1/syncs/${sync.id}/mappings`, COLUMNS.map((c) => ({ destinationField: c.field, source: { column: c.column } })));
    return sync.id as string;
  }
  const fullSync = await makeSync('customers', MODEL_SQL);
  const smallSync = await makeSync('customers-small', `${MODEL_SQL} where id <= ${SMALL}`);
  const oneSync = await makeSync('customers-one', `${MODEL_SQL} where id = 1`);

  // Warm the source's cache so neither side pays for the first read.
  await bareCopyMs(databaseUrl, MODEL_SQL);

  let worker: Proc | undefined;
  cleanups.push(() => stop(worker));
  /**
   * A run is terminal before its job returns (hooks run after): stop the worker only once no job
   * is locked, or the job would stay locked (and its sync's queue with it) after the worker exits.
   */
  async function stopWorker(): Promise<void> {
    if (!worker) return;
    await waitFor('the worker to finish its jobs', async () => (await db`select count(*)::int as n from graphile_worker._private_jobs where locked_by is not null`)[0].n === 0, 60_000, 50);
    await stop(worker);
    worker = undefined;
  }
  async function freshWorker(nodeOptions?: string): Promise<Proc> {
    await stopWorker();
    worker = spawnWorker(env, nodeOptions);
    await runSync(api, oneSync, { fullResync: true }, 120_000); // warm-up: the worker is up and has run once
    return worker;
  }

  // ---- Memory at the small size (a fresh worker process: VmHWM is its lifetime peak).
  let smallMem: ReturnType<ReturnType<typeof sampleRss>['stop']> | undefined;
  if (only.has('memory')) {
    const w = await freshWorker();
    const idle = memoryOf(w.child.pid!);
    const sampler = sampleRss(w.child.pid!);
    const r = await runSync(api, smallSync);
    smallMem = sampler.stop();
    log(`memory: ${SMALL.toLocaleString()} rows in ${r.wallMs} ms, worker peak ${smallMem.peakMb.toFixed(1)} MB (idle ${idle?.rssMb.toFixed(1)} MB)`);
  }

  // ---- Full sync throughput at N, against the bare pipe (best of two).
  let fullDone = false;
  if (only.has('full') || only.has('incremental') || only.has('memory')) {
    const bare: { rows: number; requests: number; ms: number }[] = [];
    for (let i = 0; i < 2; i++) {
      await sinkReset(sinkUrl);
      const b = await barePipe(databaseUrl, MODEL_SQL, sinkUrl);
      if (b.rows !== N || (await sinkStats(sinkUrl)).rows !== N) throw new Error(`bare pipe sent ${b.rows} rows, expected ${N}`);
      bare.push(b);
      log(`bare pipe: ${N.toLocaleString()} rows in ${b.ms.toFixed(0)} ms (${Math.round((N / b.ms) * 1000).toLocaleString()} rows/s)`);
    }
    const bestBare = Math.min(...bare.map((b) => b.ms));

    const w = await freshWorker();
    await sinkReset(sinkUrl);
    const sampler = sampleRss(w.child.pid!);
    // The Node flags the worker runs with (bin/launch.js adds the worker command's own to the shipped ones).
    const workerFlags = nodeFlagsOf(w.child.pid!);
    const r = await runSync(api, fullSync);
    await quiescent(w.child.pid!); // what the worker does after the run (loading the table it keeps) counts too
    const mem = sampler.stop();
    const sent = await sinkStats(sinkUrl);
    if (sent.rows !== N) throw new Error(`Backhaul delivered ${sent.rows} rows, expected ${N}`);
    fullDone = true;
    const bhRps = (N / r.wallMs) * 1000;
    const bareRps = (N / bestBare) * 1000;
    log(`backhaul: ${N.toLocaleString()} rows in ${r.wallMs} ms (${Math.round(bhRps).toLocaleString()} rows/s), phases ${JSON.stringify(r.phases)}`);
    if (only.has('full')) {
      const figure = round(bhRps / bareRps, 3);
      push({
        name: 'Full sync throughput',
        figure,
        bar: '≥ 0.5',
        holds: figure >= 0.5,
        unit: '× bare pipe rows/s',
        details: {
          rows: N,
          batchSize: BATCH,
          concurrency: CONCURRENCY,
          backhaulRowsPerSec: Math.round(bhRps),
          backhaulWallMs: r.wallMs,
          backhaulPhasesMs: r.phases,
          backhaulRequests: sent.requests,
          bareRowsPerSec: Math.round(bareRps),
          bareWallMs: bare.map((b) => Math.round(b.ms)),
          bareRequests: bare[0].requests,
          timing: 'Backhaul: POST /runs until the run is observed terminal (all phases). Bare: query start to last response; best of 2.',
        },
      });
    }
    if (only.has('memory') && smallMem) {
      const ratio = round(mem.peakMb / smallMem.peakMb, 3);
      const atMillion = N >= 1_000_000;
      push({
        name: `Worker peak RSS, ${N.toLocaleString()} rows (as shipped)`,
        figure: round(mem.peakMb, 1),
        bar: atMillion ? '≤ 256' : null,
        holds: atMillion ? mem.peakMb <= 256 : null,
        unit: 'MB',
        details: { rows: N, nodeOptions: '', nodeFlags: workerFlags, ...mem, note: atMillion ? undefined : 'The 256 MB bar applies at 1,000,000 rows (run without --quick).' },
      });
      push({
        name: `Worker peak RSS ${N.toLocaleString()} ÷ ${SMALL.toLocaleString()} rows (as shipped)`,
        figure: ratio,
        bar: '≤ 1.25',
        holds: ratio <= 1.25,
        unit: '×',
        details: { smallRows: SMALL, smallPeakMb: round(smallMem.peakMb, 1), largeRows: N, largePeakMb: round(mem.peakMb, 1), small: smallMem, large: mem },
      });
    }
  }

  // ---- Full sync throughput with 100-row batches on both sides, at up to 200,000 rows (best of 2 bare).
  if (only.has('full100')) {
    const sbSql = `${MODEL_SQL} where id <= ${SMALL_BATCH_ROWS}`;
    const sbSync = await makeSync('customers-batch100', sbSql, {}, SMALL_BATCH);
    const bare: number[] = [];
    for (let i = 0; i < 2; i++) {
      await sinkReset(sinkUrl);
      const b = await barePipe(databaseUrl, sbSql, sinkUrl, SMALL_BATCH);
      if (b.rows !== SMALL_BATCH_ROWS) throw new Error(`bare pipe sent ${b.rows} rows, expected ${SMALL_BATCH_ROWS}`);
      bare.push(b.ms);
      log(`bare pipe, ${SMALL_BATCH}-row batches: ${SMALL_BATCH_ROWS.toLocaleString()} rows in ${b.ms.toFixed(0)} ms`);
    }
    await freshWorker();
    await sinkReset(sinkUrl);
    const r = await runSync(api, sbSync);
    const sent = await sinkStats(sinkUrl);
    if (sent.rows !== SMALL_BATCH_ROWS) throw new Error(`Backhaul delivered ${sent.rows} rows, expected ${SMALL_BATCH_ROWS}`);
    const bhRps = (SMALL_BATCH_ROWS / r.wallMs) * 1000;
    const bareRps = (SMALL_BATCH_ROWS / Math.min(...bare)) * 1000;
    log(`backhaul, ${SMALL_BATCH}-row batches: ${SMALL_BATCH_ROWS.toLocaleString()} rows in ${r.wallMs} ms, phases ${JSON.stringify(r.phases)}`);
    const figure = round(bhRps / bareRps, 3);
    push({
      name: `Full sync throughput, ${SMALL_BATCH}-row batches`,
      figure,
      bar: '≥ 0.3',
      holds: figure >= 0.3,
      unit: '× bare pipe rows/s',
      details: {
        rows: SMALL_BATCH_ROWS,
        batchSize: SMALL_BATCH,
        concurrency: CONCURRENCY,
        backhaulRowsPerSec: Math.round(bhRps),
        backhaulWallMs: r.wallMs,
        backhaulPhasesMs: r.phases,
        backhaulRequests: sent.requests,
        bareRowsPerSec: Math.round(bareRps),
        bareWallMs: bare.map((ms) => Math.round(ms)),
        timing: 'As the full sync throughput, with 100-row batches on both sides.',
      },
    });
  }

  // ---- Incremental: change 1% of the rows, run again; then a run with nothing changed.
  if (only.has('incremental') && fullDone) {
    // 1% runs: the first after the full sync (its worker has no comparison table yet: it loads
    // the snapshot's), then three after it — a sync's runs in steady state, the bar's figure.
    const onePercent = async (k: number) => {
      const changed = await db`update src.customers set plan = plan || '+', lifetime_value = lifetime_value + 1 where id % 100 = ${k}`;
      await db`vacuum analyze src.customers`;
      await bareCopyMs(databaseUrl, MODEL_SQL); // warm
      await sinkReset(sinkUrl);
      const run = await runSync(api, fullSync);
      const sent = await sinkStats(sinkUrl);
      if (sent.rows !== changed.count) throw new Error(`incremental run delivered ${sent.rows} rows, expected ${changed.count}`);
      return { run, sent, changed };
    };
    const afterFull = await onePercent(0);
    // Three steady runs, each followed by a bare COPY; the figure is best of three against best
    // of three (the same statistic on both sides, measured in turn: a run and its baseline see
    // the same moment of the machine; best-of-two COPY against one run was biased by its noise).
    const steady: Awaited<ReturnType<typeof onePercent>>[] = [];
    const copies: number[] = [];
    for (let k = 1; k <= 3; k++) {
      steady.push(await onePercent(k));
      copies.push(await bareCopyMs(databaseUrl, MODEL_SQL));
    }
    const { run: r, sent, changed } = steady.reduce((a, b) => (b.run.wallMs < a.run.wallMs ? b : a));
    const bareMs = Math.min(...copies);
    await sinkReset(sinkUrl);
    const unchanged = await runSync(api, fullSync);
    const unchangedSent = await sinkStats(sinkUrl);
    // Two workers: a second one joins, and the sync's next 1% runs should still run on the worker
    // that kept its table (job affinity, src/engine/affinity.ts), not load the snapshot elsewhere.
    const second = spawnWorker(env);
    await waitFor('the second worker to be up', async () => (await db`select count(*)::int as n from worker_processes where idle_run_slots > 0`)[0].n >= 2, 60_000, 50);
    const poolOf = async (runId: string) => (await db<{ w: string }[]>`select worker_id as w from runs where id = ${runId}`)[0].w;
    let pool = await poolOf(unchanged.run.id);
    const twoWorkers = { runsWallMs: [] as number[], onTheSameWorker: 0 };
    for (let k = 4; k <= 6; k++) {
      const x = await onePercent(k);
      twoWorkers.runsWallMs.push(x.run.wallMs);
      const p = await poolOf(x.run.run.id);
      if (p === pool) twoWorkers.onTheSameWorker++;
      pool = p;
    }
    log(`1% runs with two workers: ${twoWorkers.runsWallMs.join(', ')} ms, ${twoWorkers.onTheSameWorker} of 3 on the worker that ran the sync's run before`);
    await waitFor('the workers to finish their jobs', async () => (await db`select count(*)::int as n from graphile_worker._private_jobs where locked_by is not null`)[0].n === 0, 60_000, 50);
    await stop(second);
    // Memory: a fresh worker runs one more unchanged run, so that its peak RSS (VmHWM) is an
    // incremental run's, not the full sync's.
    const w = await freshWorker();
    const sampler = sampleRss(w.child.pid!);
    const again = await runSync(api, fullSync);
    await quiescent(w.child.pid!);
    const unchangedMem = sampler.stop();
    log(`unchanged run in a fresh worker: ${again.wallMs} ms, worker peak ${unchangedMem.peakMb.toFixed(1)} MB`);
    const figure = round(r.wallMs / bareMs, 3);
    push({
      name: 'Incremental run (1% changed, steady state)',
      figure,
      bar: '≤ 2.0',
      holds: figure <= 2.0 && unchangedSent.requests === 0,
      unit: '× bare COPY time',
      details: {
        rows: N,
        changedRows: changed.count,
        runWallMs: r.wallMs,
        runPhasesMs: r.phases,
        rowsSent: sent.rows,
        requests: sent.requests,
        runsWallMs: steady.map((x) => x.run.wallMs),
        bareCopyMs: copies.map((c) => Math.round(c)),
        firstAfterFullSync: { figure: round(afterFull.run.wallMs / bareMs, 3), runWallMs: afterFull.run.wallMs, runPhasesMs: afterFull.run.phases, rowsSent: afterFull.sent.rows },
        twoWorkers,
        timing: 'Backhaul: POST /runs until the run is observed terminal, 1% of rows changed since the last run, which was itself incremental (steady state: the worker kept its comparison table); best of 3 runs (runsWallMs), each followed by a bare COPY. firstAfterFullSync: the same for the first incremental run after the full sync (it loads the snapshot into its table). twoWorkers: three more 1% runs once a second worker runs beside the first, and how many ran on the worker that ran the sync\'s run before (job affinity). Bare: COPY (model) TO STDOUT, best of those 3.',
        unchangedRunWallMs: unchanged.wallMs,
        unchangedRunRequests: unchangedSent.requests,
        unchangedRunSendsNothing: unchangedSent.requests === 0,
      },
    });
    const unchangedFigure = round(unchanged.wallMs / bareMs, 3);
    push({
      name: 'Unchanged run',
      figure: unchangedFigure,
      bar: '≤ 1.5',
      holds: unchangedFigure <= 1.5 && unchangedSent.requests === 0,
      unit: '× bare COPY time',
      details: {
        rows: N,
        runWallMs: unchanged.wallMs,
        runPhasesMs: unchanged.phases,
        requests: unchangedSent.requests,
        workerPeakRssMb: Math.round(unchangedMem.peakMb),
        freshWorkerRunWallMs: again.wallMs,
        bareCopyMs: copies.map((c) => Math.round(c)),
        timing: 'Backhaul: POST /runs until the run is observed terminal (all phases), nothing changed since the last run. Bare: COPY (model) TO STDOUT, best of the 3 above. workerPeakRssMb: VmHWM of a fresh worker that ran one more unchanged run (freshWorkerRunWallMs).',
      },
    });
  }

  // ---- Memory again with heap flags suited to a worker (full resyncs: the same work as a first sync).
  if (only.has('memory') && fullDone) {
    const w = await freshWorker(TUNED_NODE_OPTIONS);
    let sampler = sampleRss(w.child.pid!);
    await runSync(api, smallSync, { fullResync: true });
    const small = sampler.stop();
    sampler = sampleRss(w.child.pid!);
    await sinkReset(sinkUrl);
    const r = await runSync(api, fullSync, { fullResync: true });
    const large = sampler.stop();
    if ((await sinkStats(sinkUrl)).rows !== N) throw new Error('the full resync did not send every row');
    log(`memory with NODE_OPTIONS="${TUNED_NODE_OPTIONS}": ${small.peakMb.toFixed(1)} MB at ${SMALL.toLocaleString()} rows, ${large.peakMb.toFixed(1)} MB at ${N.toLocaleString()} (${r.wallMs} ms)`);
    const atMillion = N >= 1_000_000;
    push({
      name: `Worker peak RSS, ${N.toLocaleString()} rows (NODE_OPTIONS heap flags)`,
      figure: round(large.peakMb, 1),
      bar: atMillion ? '≤ 256' : null,
      holds: atMillion ? large.peakMb <= 256 : null,
      unit: 'MB',
      details: { rows: N, nodeOptions: TUNED_NODE_OPTIONS, wallMs: r.wallMs, rowsPerSec: Math.round((N / r.wallMs) * 1000), ...large },
    });
    const ratio = round(large.peakMb / small.peakMb, 3);
    push({
      name: `Worker peak RSS ${N.toLocaleString()} ÷ ${SMALL.toLocaleString()} rows (NODE_OPTIONS heap flags)`,
      figure: ratio,
      bar: '≤ 1.25',
      holds: ratio <= 1.25,
      unit: '×',
      details: { nodeOptions: TUNED_NODE_OPTIONS, smallRows: SMALL, smallPeakMb: round(small.peakMb, 1), largeRows: N, largePeakMb: round(large.peakMb, 1), small, large },
    });
    await freshWorker();
  }

  // ---- Trigger-to-start latency over sequential triggers of a one-row sync.
  if (only.has('latency')) {
    if (!worker) await freshWorker();
    const lat: number[] = [];
    for (let i = 0; i < TRIGGERS; i++) {
      const r = await runSync(api, oneSync, {}, 60_000);
      lat.push(Date.parse(r.run.startedAt) - r.triggeredAt);
    }
    lat.sort((x, y) => x - y);
    push({
      name: 'Trigger-to-start latency (median)',
      figure: percentile(lat, 50),
      bar: null,
      holds: null,
      unit: 'ms',
      details: { triggers: TRIGGERS, medianMs: percentile(lat, 50), p95Ms: percentile(lat, 95), maxMs: lat[lat.length - 1], minMs: lat[0] },
    });
  }

  // ---- API: Backhaul's routes against a bare fastify route answering the same JSON.
  if (only.has('api')) {
    await stopWorker();
    for (let i = 0; i < 50; i++) await makeSync(`extra-${i}`, `${MODEL_SQL} where id = ${i + 2}`);
    const routes: Record<string, unknown> = {
      [`/v1/syncs/${fullSync}`]: await api.ok('GET', `/v1/syncs/${fullSync}`),
      '/v1/syncs': await api.ok('GET', '/v1/syncs?limit=50'),
    };
    const file = join(mkdtempSync(join(os.tmpdir(), 'bh-bench-')), 'routes.json');
    writeFileSync(file, JSON.stringify(routes));
    const barePort = await freePort();
    const bareApi = spawnNode([join(here, 'bare-api.ts'), String(barePort), file]);
    cleanups.push(() => stop(bareApi));
    await bareApi.firstJson;
    for (const [label, path] of [
      ['GET /v1/syncs/{id}', `/v1/syncs/${fullSync}`],
      ['GET /v1/syncs?limit=50', '/v1/syncs?limit=50'],
    ] as const) {
      await cannon(`${apiUrl}${path}`, env.token, 1); // warm-up
      await cannon(`http://127.0.0.1:${barePort}${path}`, undefined, 1);
      const bh = await cannon(`${apiUrl}${path}`, env.token, API_SECONDS);
      const bare = await cannon(`http://127.0.0.1:${barePort}${path}`, undefined, API_SECONDS);
      if (bh.non2xx) throw new Error(`${label}: ${bh.non2xx} non-2xx answers from Backhaul`);
      const figure = round(bh.rps / bare.rps, 3);
      push({
        name: `API ${label}`,
        figure,
        bar: '≥ 0.3',
        holds: figure >= 0.3,
        unit: '× bare fastify req/s',
        details: {
          connections: 10,
          seconds: API_SECONDS,
          backhaulRps: Math.round(bh.rps),
          backhaulP50Ms: bh.p50,
          backhaulP99Ms: bh.p99,
          bareRps: Math.round(bare.rps),
          bareP50Ms: bare.p50,
          bareP99Ms: bare.p99,
          p99Ratio: round(bh.p99 / Math.max(1, bare.p99), 2),
          responseBytes: JSON.stringify(routes[path.split('?')[0]]).length,
        },
      });
    }
  }

  // ---- Scheduler scale: SCHED_SYNCS syncs on interval schedules; the database time the scheduler
  // spends per minute. The worker reaches PostgreSQL through a metering proxy (startPgMeter), which
  // times and attributes each of its round trips; pg_stat_database gives the whole database's
  // active time beside it. A window with the worker idle (no scheduled syncs) is the baseline.
  if (only.has('scheduler')) {
    await stopWorker();
    const fetched: { taskId: number; latenessMs: number }[] = [];
    // Every job fetch (id, slot, lateness), in or out of a window: a slot due near a window's end is fetched after it.
    const allFetches: { id: string; taskId: number; runAt: number; latenessMs: number }[] = [];
    let measuring = false;
    const meter = await startPgMeter({ host: u.hostname, port: Number(u.port || 5432) }, schedulerLabel, (job) => {
      if (!job.run_at || !job.locked_at) return;
      const runAt = parsePgTimestamp(job.run_at);
      const latenessMs = parsePgTimestamp(job.locked_at) - runAt;
      allFetches.push({ id: job.id ?? '', taskId: Number(job.task_id), runAt, latenessMs });
      if (measuring) fetched.push({ taskId: Number(job.task_id), latenessMs });
    });
    cleanups.push(() => meter.close());
    const metered = new URL(databaseUrl);
    metered.hostname = '127.0.0.1';
    metered.port = String(meter.port);
    worker = spawnWorker({ ...env, databaseUrl: metered.toString() });
    await runSync(api, oneSync, {}, 120_000); // the worker is up and has run once
    // More workers (--sched-workers): the same flags, through the same meter.
    const extraWorkers: Proc[] = [];
    for (let i = 1; i < SCHED_WORKERS; i++) extraWorkers.push(spawnWorker({ ...env, databaseUrl: metered.toString() }));
    cleanups.push(() => Promise.all(extraWorkers.map((w) => stop(w))));
    await sleep(3000); // past its start-up statements

    const dbStats = async () =>
      (
        await db<{ at: Date; activeMs: number; xacts: number; tupRead: number; tupWritten: number; blocks: number; wal: number; queues: number }[]>`
          select clock_timestamp() as at, active_time::float8 as "activeMs", (xact_commit + xact_rollback)::float8 as xacts,
                 (tup_returned + tup_fetched)::float8 as "tupRead", (tup_inserted + tup_updated + tup_deleted)::float8 as "tupWritten",
                 (blks_hit + blks_read)::float8 as blocks, pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8 as wal,
                 (select count(*)::int from graphile_worker._private_job_queues) as queues
          from pg_stat_database where datname = current_database()`
      )[0];
    /** One measured window: the meter's counters and pg_stat_database's, per minute. */
    async function measure(seconds: number) {
      const m0 = meter.snapshot();
      const d0 = await dbStats();
      fetched.length = 0;
      measuring = true;
      await sleep(seconds * 1000);
      measuring = false;
      const m1 = meter.snapshot();
      const d1 = await dbStats();
      const diff = meterDiff(m0, m1);
      const perMin = 60 / diff.seconds;
      const loadAverage = os.loadavg().map((l) => round(l, 2));
      return { ...diff, perMin, from: d0.at, to: d1.at, jobs: [...fetched], loadAverage, db: {
        activeMsPerMin: round((d1.activeMs - d0.activeMs) * perMin, 1),
        xactsPerMin: Math.round((d1.xacts - d0.xacts) * perMin),
        tuplesReadPerMin: Math.round((d1.tupRead - d0.tupRead) * perMin),
        tuplesWrittenPerMin: Math.round((d1.tupWritten - d0.tupWritten) * perMin),
        blocksPerMin: Math.round((d1.blocks - d0.blocks) * perMin),
        // The server's whole WAL (every database on it): other users of the server add to it.
        serverWalMbPerMin: round(((d1.wal - d0.wal) * perMin) / 1e6, 1),
        // graphile-worker's named queues (one per sync that ran) at the end of the window.
        jobQueueRows: d1.queues,
      } };
    }

    log(`scheduler: idle worker baseline, ${SCHED_IDLE_SECONDS} s`);
    const idle = await measure(SCHED_IDLE_SECONDS);

    log(`scheduler: creating ${SCHED_SYNCS} syncs every ${SCHED_EVERY} s`);
    const tCreate = Date.now();
    // Each sync's slots are on its grid (anchor + k × interval): anchors spread evenly over one
    // interval, as syncs created at arbitrary times would be.
    const anchors = Array.from({ length: SCHED_SYNCS }, (_, i) => tCreate + (SCHED_EVERY * 1000 * i) / SCHED_SYNCS);
    // One one-row model for all of them (a model's creation probes its query in the source: the
    // slow part of creating thousands): each run reads, diffs and delivers one row.
    const schedModel = await api.ok('PUT', '/v1/models/sched-one-row', { name: 'sched-one-row', connectionId: source.id, sql: `${MODEL_SQL} where id = 1`, primaryKey: 'id' });
    const viaApi = Math.min(SCHED_SYNCS, SCHED_API_SYNCS);
    const schedIds = await mapLimit(Array.from({ length: viaApi }, (_, i) => i), 16, (i) =>
      makeSync(`sched-${i}`, { modelId: schedModel.id }, {
        schedule: { type: 'interval', everySeconds: SCHED_EVERY, anchor: new Date(anchors[i]).toISOString() },
      }),
    );
    if (SCHED_SYNCS > viaApi) {
      // Beyond SCHED_API_SYNCS, copies of the last one made in SQL (its row and mappings, another
      // anchor), each with its scheduled job as planSchedule adds it: the API creates about 15
      // syncs a second on this kind of machine, which makes 10,000 a quarter of an hour.
      const template = schedIds[viaApi - 1];
      const rest = Array.from({ length: SCHED_SYNCS - viaApi }, (_, j) => viaApi + j);
      const made = await db<{ id: string }[]>`
        with n as (
          select i, a, 'sync_bench' || lpad(i::text, 8, '0') as id from unnest(${rest}::int[], ${rest.map((i) => new Date(anchors[i]).toISOString())}::timestamptz[]) as x(i, a)
        ), s as (
          insert into syncs
          select (jsonb_populate_record(null::syncs, to_jsonb(t) || jsonb_build_object('id', n.id, 'slug', 'sched-' || n.i, 'name', 'sched-' || n.i,
                    'schedule', jsonb_build_object('type', 'interval', 'everySeconds', ${SCHED_EVERY}::int, 'anchor', to_char(n.a at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
                    'created_at', now(), 'updated_at', now()))).*
          from syncs t, n where t.id = ${template}
          returning id
        ), m as (
          insert into mappings
          select (jsonb_populate_record(null::mappings, to_jsonb(mp) || jsonb_build_object('id', 'map_bench' || n.i || '_' || mp.id, 'sync_id', n.id))).*
          from mappings mp, n where mp.sync_id = ${template}
        ), j as (
          select graphile_worker.add_job('backhaul_schedule', json_build_object('syncId', n.id), job_key => 'schedule:' || n.id, job_key_mode => 'replace', max_attempts => 5,
                   run_at => case when n.a > now() then n.a else n.a + ${SCHED_EVERY}::int * interval '1 second' * ceil(extract(epoch from now() - n.a) / ${SCHED_EVERY}::int) end)
          from n
        )
        select s.id, (select count(*) from j) as jobs from s`;
      schedIds.push(...made.map((r) => r.id));
      if (schedIds.length !== SCHED_SYNCS) throw new Error(`made ${schedIds.length} scheduled syncs, expected ${SCHED_SYNCS}`);
    }
    const createMs = Date.now() - tCreate;
    log(`scheduler: created in ${(createMs / 1000).toFixed(1)} s, slots anchored evenly over ${SCHED_EVERY} s; warming up (one interval)`);
    const warmStart = Date.now();
    // Every sync's first slot has fired: it queued a run (a worker that keeps up has run them too).
    // Workers that cannot fire them all never get there: the window then measures how far behind they are.
    await waitFor(
      'every scheduled sync to have fired once',
      async () => (await db`select count(distinct sync_id)::int as n from runs where trigger = 'schedule'`)[0].n >= SCHED_SYNCS,
      (SCHED_EVERY * 2 + 60) * 1000,
      1000,
    ).catch((e) => log(`scheduler: warm-up ended without every sync having fired (${(e as Error).message})`));
    const warmupMs = Date.now() - warmStart;

    log(`scheduler: measuring ${SCHED_SECONDS} s`);
    const load = await measure(SCHED_SECONDS);

    // Stop the schedules (disabled, their scheduled jobs removed: a fire in flight re-plans nothing
    // for a disabled sync) and the runs still queued behind a worker that did not keep up (cancelled,
    // their jobs removed), then the worker. In SQL: thousands of PATCHes would take minutes.
    await db`with s as (update syncs set enabled = false where id = any(${schedIds}) returning id)
             select graphile_worker.remove_job('schedule:' || id) from s`;
    await db`with c as (update runs set status = 'cancelled', finished_at = now() where status = 'queued' and sync_id = any(${schedIds}) returning id)
             select graphile_worker.remove_job('run:' || id) from c`;
    await stopWorker();
    await Promise.all(extraWorkers.splice(0).map((w) => stop(w)));

    const tasks = new Map((await db<{ id: number; identifier: string }[]>`select id, identifier from graphile_worker._private_tasks`).map((t) => [t.id, t.identifier]));
    const named = (labels: Record<string, MeterCounter>) =>
      Object.fromEntries(Object.entries(labels).map(([k, v]) => [k.replace(/#(\d+)$/, (_, id) => tasks.get(Number(id)) ?? `task ${id}`), v]));
    const idleLabels = named(idle.labels);
    const loadLabels = named(load.labels);
    const ZERO: MeterCounter = { count: 0, ms: 0, roundTrips: 0, cpuMs: 0, waitMs: 0 };
    const plus = (a: MeterCounter, b: MeterCounter, f = 1): MeterCounter => ({
      count: a.count + f * b.count,
      ms: a.ms + f * b.ms,
      roundTrips: a.roundTrips + f * b.roundTrips,
      cpuMs: a.cpuMs + f * b.cpuMs,
      waitMs: a.waitMs + f * b.waitMs,
    });
    const sum = (labels: Record<string, MeterCounter>, pick: (k: string) => boolean) => Object.entries(labels).reduce((acc, [k, v]) => (pick(k) ? plus(acc, v) : acc), ZERO);
    const fires = loadLabels['job fetch backhaul_schedule']?.count ?? 0;
    // A statement both the runs' finishing hooks and (before it read the sync and its active run
    // in one statement) the schedule task send: the task sent it once per active-run check, so
    // that many of them (at their mean cost) go to the scheduler.
    const shared = loadLabels[SHARED_SYNC_SELECT] ?? ZERO;
    const checks = loadLabels['schedule: active-run check']?.count ?? 0;
    const sharedShare = shared.count ? Math.min(1, checks / shared.count) : 0;
    const sched = plus(sum(loadLabels, (k) => k.startsWith('schedule: ') || k.endsWith(' backhaul_schedule')), shared, sharedShare);
    const runsDb = plus(sum(loadLabels, (k) => k === 'runs' || k.endsWith(' backhaul_run')), shared, 1 - sharedShare);
    const loadTotal = sum(loadLabels, () => true);
    const idleTotal = sum(idleLabels, () => true);
    const rate = (c: MeterCounter, perMin: number) => ({
      msPerMin: round(c.ms * perMin, 1),
      cpuMsPerMin: round(c.cpuMs * perMin, 1),
      runQueueWaitMsPerMin: round(c.waitMs * perMin, 1),
      perMin: round(c.count * perMin, 1),
      roundTripsPerMin: round(c.roundTrips * perMin, 1),
      msEach: c.count ? round(c.ms / c.count, 3) : null,
      cpuMsEach: c.count ? round(c.cpuMs / c.count, 3) : null,
    });
    const perLabel = (labels: Record<string, MeterCounter>, perMin: number) =>
      Object.fromEntries(Object.entries(labels).sort((a, b) => b[1].ms - a[1].ms).map(([k, v]) => [k, rate(v, perMin)]));

    // The runs table: scheduled runs in the window, each sync's count, its cadence, overlaps.
    const [inWindow] = await db<{ created: number; minPerSync: number; maxPerSync: number; failed: number }[]>`
      with per as (
        select s.id, count(r.id)::int as n, count(r.id) filter (where r.status = 'failed')::int as failed
        from syncs s left join runs r on r.sync_id = s.id and r.trigger = 'schedule' and r.queued_at >= ${load.from} and r.queued_at < ${load.to}
        where s.id = any(${schedIds}) group by s.id)
      select sum(n)::int as created, min(n)::int as "minPerSync", max(n)::int as "maxPerSync", sum(failed)::int as failed from per`;
    const [cadence] = await db<{ periods: number; avgS: number; minS: number; p95S: number; maxS: number; overlaps: number }[]>`
      with r as (
        select sync_id, queued_at, lag(queued_at) over w as prev_queued, lag(finished_at) over w as prev_finished, lag(id) over w as prev
        from runs where sync_id = any(${schedIds}) window w as (partition by sync_id order by queued_at))
      select count(*) filter (where prev is not null)::int as periods,
             avg(extract(epoch from queued_at - prev_queued))::float8 as "avgS",
             min(extract(epoch from queued_at - prev_queued))::float8 as "minS",
             percentile_cont(0.95) within group (order by extract(epoch from queued_at - prev_queued))::float8 as "p95S",
             max(extract(epoch from queued_at - prev_queued))::float8 as "maxS",
             count(*) filter (where prev is not null and (prev_finished is null or queued_at < prev_finished))::int as overlaps
      from r`;
    const [{ n: doubleActive }] = await db<{ n: number }[]>`
      select count(*)::int as n from (select sync_id from runs where status in ('queued', 'running') group by sync_id having count(*) > 1) x`;
    const schedTaskId = [...tasks].find(([, n]) => n === 'backhaul_schedule')?.[0];
    const late = load.jobs.filter((j) => j.taskId === schedTaskId).map((j) => j.latenessMs).sort((a, b) => a - b);
    // Keep-up: the slots due in the window (each sync's grid, anchor + k × interval), ending
    // ON_TIME_MS before its end so that each could still be fired on time, against the
    // schedule jobs fetched for them (a job fetched again after a failure counts once).
    const dueFrom = load.from.getTime();
    const dueTo = load.to.getTime() - ON_TIME_MS;
    const everyMs = SCHED_EVERY * 1000;
    let due = 0;
    for (const a of anchors) due += Math.max(0, Math.ceil((dueTo - a) / everyMs) - Math.ceil((dueFrom - a) / everyMs));
    const firstFetch = new Map<string, { runAt: number; latenessMs: number }>();
    for (const f of allFetches) {
      if (f.taskId !== schedTaskId || f.runAt < dueFrom || f.runAt >= dueTo) continue;
      const k = `${f.id}@${f.runAt}`;
      if (!firstFetch.has(k)) firstFetch.set(k, f);
    }
    const dueFetches = [...firstFetch.values()];
    const onTime = dueFetches.filter((f) => f.latenessMs < ON_TIME_MS).length;
    const dueLate = dueFetches.map((f) => f.latenessMs).sort((a, b) => a - b);
    const keepUp = {
      due,
      fired: dueFetches.length,
      onTime,
      onTimeMs: ON_TIME_MS,
      latenessMs: { p50: round(percentile(dueLate, 50), 1), p95: round(percentile(dueLate, 95), 1), p99: round(percentile(dueLate, 99), 1), max: round(dueLate[dueLate.length - 1] ?? NaN, 1) },
    };
    const expectedFiresPerMin = (SCHED_SYNCS * 60) / SCHED_EVERY;
    const topStatements = Object.entries(load.statements)
      .sort((a, b) => b[1].ms - a[1].ms)
      .slice(0, 15)
      .map(([sql, v]) => ({ sql, ...rate(v, load.perMin) }));

    const cpu = meter.cpu();
    const schedMsPerMin = sched.ms * load.perMin;
    const details = {
      syncs: SCHED_SYNCS,
      everySeconds: SCHED_EVERY,
      workers: SCHED_WORKERS,
      keepUp,
      windowSeconds: round(load.seconds, 1),
      idleWindowSeconds: round(idle.seconds, 1),
      // The machine's load average at the end of the window: other processes on the machine
      // lengthen every round trip (see runQueueWaitMsPerMin); the CPU figures depend on it least.
      loadAverageAtEnd: load.loadAverage,
      createSeconds: round(createMs / 1000, 1),
      warmupSeconds: round(warmupMs / 1000, 1),
      // The scheduler: schedule jobs fetched and completed, and the task's statements.
      scheduler: rate(sched, load.perMin),
      schedulerMsPerFire: fires ? round(sched.ms / fires, 3) : null,
      schedulerCpuMsPerFire: fires && cpu ? round(sched.cpuMs / fires, 3) : null,
      schedulerRoundTripsPerFire: fires ? round(sched.roundTrips / fires, 1) : null,
      schedulerShareOfWorkerDbTime: loadTotal.ms ? round(sched.ms / loadTotal.ms, 3) : null,
      // Does it keep up, without piling up?
      firesPerMin: round(fires * load.perMin, 1),
      expectedFiresPerMin: round(expectedFiresPerMin, 1),
      scheduledRunsPerMin: round(inWindow.created * load.perMin, 1),
      // Fires whose task found a run still active (no trigger); ± a few at the window's edges.
      skippedSlots: Math.max(0, fires - inWindow.created),
      failedRuns: inWindow.failed,
      scheduledRunsPerSyncInWindow: { min: inWindow.minPerSync, max: inWindow.maxPerSync, expected: round(load.seconds / SCHED_EVERY, 2) },
      periodSeconds: { expected: SCHED_EVERY, periods: cadence.periods, avg: round(cadence.avgS ?? NaN, 3), min: round(cadence.minS ?? NaN, 3), p95: round(cadence.p95S ?? NaN, 3), max: round(cadence.maxS ?? NaN, 3) },
      fireLatenessMs: { fires: late.length, p50: round(percentile(late, 50), 1), p95: round(percentile(late, 95), 1), max: round(late[late.length - 1] ?? NaN, 1) },
      overlappingRuns: cadence.overlaps,
      syncsWithTwoActiveRunsAtEnd: doubleActive,
      // Context: the runs the scheduler triggers, the worker's polling, the whole worker, the database.
      runs: rate(runsDb, load.perMin),
      runsMsPerRun: inWindow.created ? round(runsDb.ms / inWindow.created, 2) : null,
      emptyPolls: rate(loadLabels['job poll (empty)'] ?? ZERO, load.perMin),
      worker: rate(loadTotal, load.perMin),
      idleWorker: rate(idleTotal, idle.perMin),
      schedulerVsIdleWorker: idleTotal.ms ? round(schedMsPerMin / (idleTotal.ms * idle.perMin), 1) : null,
      database: load.db,
      idleDatabase: idle.db,
      cpuMeasured: cpu,
      meteredConnections: meter.snapshot().connections,
      unmeteredConnections: meter.snapshot().unmeasured,
      breakdown: perLabel(loadLabels, load.perMin),
      idleBreakdown: perLabel(idleLabels, idle.perMin),
      topStatements,
      method:
        'The worker connects through a metering proxy: each round trip is timed from the request leaving the proxy to ReadyForQuery (pipelined ones back to back), ' +
        "so ms is the time the server had the worker's request in hand, loopback hops included (what pg_stat_statements' total_exec_time would add up); " +
        'cpuMs is the serving backend\'s CPU time over the same cycles (/proc/<pid>/schedstat), runQueueWaitMs its wait for a CPU. ' +
        'Scheduler = get_job returning a backhaul_schedule job + its completion + the task (load sync, active-run check, trigger transaction, replan transaction). ' +
        "database.activeMsPerMin: pg_stat_database.active_time of the whole scratch database (every process, incl. the runs' source queries).",
    };
    const pileUp = cadence.overlaps > 0 || doubleActive > 0;
    if (pileUp) log(`scheduler: runs overlapped (${cadence.overlaps} overlapping, ${doubleActive} syncs with two active runs)`);
    log(
      `scheduler: ${details.firesPerMin} fires/min (expected ${details.expectedFiresPerMin}), ${details.schedulerMsPerFire} ms (CPU ${details.schedulerCpuMsPerFire} ms) and ` +
        `${details.schedulerRoundTripsPerFire} round trips per fire, lateness p50 ${details.fireLatenessMs.p50} ms p95 ${details.fireLatenessMs.p95} ms; ` +
        `runs ${details.runs.msPerMin} ms/min; idle worker ${details.idleWorker.msPerMin} ms/min; database active ${load.db.activeMsPerMin} ms/min (idle ${idle.db.activeMsPerMin})`,
    );
    const setup = `${SCHED_SYNCS.toLocaleString()} syncs every ${SCHED_EVERY} s, ${SCHED_WORKERS === 1 ? 'one worker' : `${SCHED_WORKERS} workers`}`;
    log(`scheduler: ${onTime} of ${due} due slots fired on time (< ${ON_TIME_MS} ms late), ${dueFetches.length} fired; lateness p95 ${keepUp.latenessMs.p95} ms`);
    const keepUpDetails = { ...keepUp, syncs: SCHED_SYNCS, everySeconds: SCHED_EVERY, workers: SCHED_WORKERS, windowSeconds: round(load.seconds, 1), loadAverageAtEnd: load.loadAverage, firesPerMin: details.firesPerMin, expectedFiresPerMin: details.expectedFiresPerMin, skippedSlots: details.skippedSlots };
    const onTimeRatio = due ? round(onTime / due, 3) : 0;
    push({
      name: `Scheduler slots fired on time, ${setup}`,
      figure: onTimeRatio,
      bar: '≥ 1.0',
      holds: due > 0 && onTime >= due,
      unit: '× due slots',
      details: keepUpDetails,
    });
    push({
      name: `Scheduler p95 lateness, ${setup}`,
      figure: keepUp.latenessMs.p95,
      bar: `< ${ON_TIME_MS}`,
      holds: keepUp.latenessMs.p95 < ON_TIME_MS,
      unit: 'ms',
      details: keepUpDetails,
    });
    push({
      name: `Scheduler DB time, ${setup}`,
      figure: round(schedMsPerMin, 1),
      bar: null,
      holds: null,
      unit: 'ms / min',
      details,
    });
  }

  // ---- Output
  const machine = {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    memoryGb: round(os.totalmem() / 1024 ** 3, 1),
    loadAverage: os.loadavg().map((l) => round(l, 2)),
    platform: `${os.platform()} ${os.release()}`,
    node: process.version,
    postgres: pgVersion,
    rows: N,
    smallRows: SMALL,
    quick,
    date: new Date().toISOString(),
    durationSec: Math.round((Date.now() - started) / 1000),
  };
  mkdirSync(opts.out!, { recursive: true });
  writeFileSync(join(opts.out!, 'latest.json'), `${JSON.stringify({ machine, scenarios }, null, 2)}\n`);
  writeFileSync(join(opts.out!, 'latest.svg'), chart(scenarios, `Backhaul bench — ${N.toLocaleString()} rows, ${machine.cpus} CPUs, ${machine.date.slice(0, 10)}`));
  printTable();
  // Missed bars are results, not errors (CI runs --quick to keep the harness working); --strict fails on them.
  if (opts.strict && scenarios.some((s) => s.holds === false)) process.exitCode = 1;
}

function printTable(): void {
  const rows = scenarios.map((s) => {
    const d = s.details;
    const abs =
      s.name.startsWith('Full')
        ? `${d.backhaulRowsPerSec} vs ${d.bareRowsPerSec} rows/s`
        : s.name.startsWith('Incremental')
          ? `${d.runWallMs} ms vs COPY ${Math.min(...(d.bareCopyMs as number[]))} ms; first after the full sync ${(d.firstAfterFullSync as { runWallMs: number; figure: number }).runWallMs} ms (${(d.firstAfterFullSync as { figure: number }).figure} ×); unchanged run: ${d.unchangedRunRequests} requests`
          : s.name.startsWith('API')
            ? `${d.backhaulRps} vs ${d.bareRps} req/s; p99 ${d.backhaulP99Ms} vs ${d.bareP99Ms} ms`
            : s.name.startsWith('Trigger')
              ? `median ${d.medianMs} ms, p95 ${d.p95Ms} ms`
              : s.name.startsWith('Scheduler slots') || s.name.startsWith('Scheduler p95')
                ? `${d.onTime} of ${d.due} due slots on time (${d.fired} fired); p50 ${(d.latenessMs as { p50: number }).p50} ms, max ${(d.latenessMs as { max: number }).max} ms; load ${(d.loadAverageAtEnd as number[]).join(' ')}`
              : s.name.startsWith('Scheduler')
                ? `${d.schedulerMsPerFire} ms (CPU ${d.schedulerCpuMsPerFire}) × ${d.firesPerMin} fires/min (expected ${d.expectedFiresPerMin}); runs ${(d.runs as { msPerMin: number }).msPerMin} ms/min; idle worker ${(d.idleWorker as { msPerMin: number }).msPerMin} ms/min`
              : s.name.includes('÷')
                ? `${d.largePeakMb} MB vs ${d.smallPeakMb} MB`
                : '';
    return [s.name, `${s.figure} ${s.unit}`, s.bar ?? '—', s.holds === null ? 'reported' : s.holds ? 'holds' : 'MISSED', abs];
  });
  const head = ['scenario', 'figure', 'bar', '', 'absolute'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i])).join('  ');
  process.stdout.write(`\n${line(head)}\n${widths.map((w) => '-'.repeat(w)).join('  ')}\n${rows.map(line).join('\n')}\n\n`);
}

try {
  process.chdir(root);
  await main();
} catch (e) {
  log(`failed: ${(e as Error).stack ?? e}`);
  process.exitCode = 1;
} finally {
  for (const c of cleanups.reverse()) await c().catch(() => {});
}
