import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Database } from '../db/client.ts';

/** What the metrics read of a finished run (structural: lib imports no domain types). */
export interface FinishedRun {
  syncId: string;
  status: string;
  startedAt: Date | null;
  finishedAt: Date | null;
  counts: unknown;
}
type OpCounts = Partial<Record<'insert' | 'update' | 'delete', number>>;
type Counts = { queried?: number; invalid?: number; planned?: OpCounts; succeeded?: OpCounts; rejected?: OpCounts };

// Prometheus metrics (served at /metrics). One registry per Backhaul instance. Labels are
// bounded: sync and connection ids (as many as are configured), operations, phases, statuses,
// status classes, error codes from a fixed set — never row keys or URLs.
// Row and run counters are added when a run finishes, from its final counts, so they equal
// what the run reports. Queue depth is read from the database at scrape time (any process).

const OPS = ['insert', 'update', 'delete'] as const;

export class Metrics {
  readonly registry = new Registry();
  private readonly database: Database;
  readonly rowsQueried: Counter<'sync'>;
  readonly sourceRowsRead: Counter<'sync' | 'read'>;
  readonly comparisons: Counter<'sync' | 'table'>;
  readonly rowsInvalid: Counter<'sync'>;
  readonly rowsPlanned: Counter<'sync' | 'operation'>;
  readonly rowsSucceeded: Counter<'sync' | 'operation'>;
  readonly rowsRejected: Counter<'sync' | 'operation'>;
  readonly runs: Counter<'sync' | 'status'>;
  readonly runDuration: Histogram<'status'>;
  readonly phaseDuration: Histogram<'phase'>;
  readonly destinationRequests: Counter<'connection' | 'status_class'>;
  readonly retries: Counter<'sync' | 'code'>;
  readonly throttled: Counter<'sync'>;
  readonly webhookDeliveries: Counter<'target' | 'outcome'>;
  readonly alerts: Counter<'kind' | 'action'>;

  constructor(database: Database, opts: { processMetrics?: boolean } = {}) {
    this.database = database;
    const registers = [this.registry];
    this.rowsQueried = new Counter({ name: 'backhaul_rows_queried_total', help: 'Rows read from the model by finished runs', labelNames: ['sync'], registers });
    this.sourceRowsRead = new Counter({
      name: 'backhaul_source_rows_read_total',
      help: 'Rows the querying phase read from model sources: read="key" is an incremental run\'s key scan (primary key and fingerprint only), read="row" whole rows, mapped and staged',
      labelNames: ['sync', 'read'],
      registers,
    });
    this.comparisons = new Counter({
      name: 'backhaul_incremental_comparisons_total',
      help: 'Incremental runs by where their key scan was compared: table="kept" the table the worker kept from the sync\'s last run, "loaded" a table loaded from the snapshot, "sql" in the control database (above the in-memory bound)',
      labelNames: ['sync', 'table'],
      registers,
    });
    this.rowsInvalid = new Counter({ name: 'backhaul_rows_invalid_total', help: 'Rows that could not be mapped (not sent)', labelNames: ['sync'], registers });
    this.rowsPlanned = new Counter({ name: 'backhaul_rows_planned_total', help: 'Operations planned by finished runs', labelNames: ['sync', 'operation'], registers });
    this.rowsSucceeded = new Counter({ name: 'backhaul_rows_succeeded_total', help: 'Rows the destination acknowledged', labelNames: ['sync', 'operation'], registers });
    this.rowsRejected = new Counter({ name: 'backhaul_rows_rejected_total', help: 'Rows the destination refused', labelNames: ['sync', 'operation'], registers });
    this.runs = new Counter({ name: 'backhaul_runs_total', help: 'Finished runs by terminal status', labelNames: ['sync', 'status'], registers });
    this.runDuration = new Histogram({
      name: 'backhaul_run_duration_seconds',
      help: 'Run duration from start to finish',
      labelNames: ['status'],
      buckets: [0.5, 1, 5, 15, 60, 300, 900, 3600, 14400],
      registers,
    });
    this.phaseDuration = new Histogram({
      name: 'backhaul_run_phase_duration_seconds',
      help: 'Duration of each run phase',
      labelNames: ['phase'],
      buckets: [0.05, 0.25, 1, 5, 15, 60, 300, 900, 3600],
      registers,
    });
    this.destinationRequests = new Counter({
      name: 'backhaul_destination_requests_total',
      help: 'Requests to destinations by status class (2xx, 3xx, 4xx, 5xx, error)',
      labelNames: ['connection', 'status_class'],
      registers,
    });
    this.retries = new Counter({ name: 'backhaul_destination_retries_total', help: 'Destination requests retried, by reason', labelNames: ['sync', 'code'], registers });
    this.throttled = new Counter({ name: 'backhaul_destination_throttled_total', help: 'Destination answers 429 (rate limited)', labelNames: ['sync'], registers });
    this.webhookDeliveries = new Counter({
      name: 'backhaul_webhook_deliveries_total',
      help: 'Webhook delivery attempts by outcome (succeeded, retrying, failed, endpoint_disabled)',
      labelNames: ['target', 'outcome'],
      registers,
    });
    this.alerts = new Counter({ name: 'backhaul_alerts_total', help: 'Alerts raised and resolved', labelNames: ['kind', 'action'], registers });
    const db = this.database;
    new Gauge({
      name: 'backhaul_job_queue_depth',
      help: 'Jobs due and waiting for a worker, by task',
      labelNames: ['task'],
      registers,
      async collect() {
        this.reset();
        const rows = await db.sql<{ task: string; n: number }[]>`
          select task_identifier as task, count(*)::int as n from graphile_worker.jobs
          where locked_at is null and run_at <= now() and attempts < max_attempts group by 1`.catch(() => []);
        for (const r of rows) this.set({ task: r.task }, r.n);
      },
    });
    new Gauge({
      name: 'backhaul_job_queue_oldest_age_seconds',
      help: 'How long the oldest due job has been waiting',
      registers,
      async collect() {
        const [r] = await db.sql<{ age: number | null }[]>`
          select extract(epoch from now() - min(run_at))::float8 as age from graphile_worker.jobs
          where locked_at is null and run_at <= now() and attempts < max_attempts`.catch(() => [{ age: null }]);
        this.set(r?.age ?? 0);
      },
    });
    if (opts.processMetrics !== false) collectDefaultMetrics({ register: this.registry, prefix: 'backhaul_' });
  }

  /**
   * Gauges of the comparison tables this process's worker keeps between a sync's runs
   * (src/engine/fingerprint-cache.ts; BACKHAUL_FINGERPRINT_CACHE_MB bounds their bytes), read at
   * scrape time.
   */
  keptTables(stats: () => { syncs: number; bytes: number }): void {
    const registers = [this.registry];
    new Gauge({ name: 'backhaul_kept_tables', help: "Syncs whose incremental comparison table this worker keeps for their next run", registers, collect() { this.set(stats().syncs); } });
    new Gauge({ name: 'backhaul_kept_tables_bytes', help: 'Memory held by the comparison tables this worker keeps (bounded by BACKHAUL_FINGERPRINT_CACHE_MB)', registers, collect() { this.set(stats().bytes); } });
  }

  runFinished(run: FinishedRun): void {
    const c = run.counts as Counts;
    const sync = run.syncId;
    this.runs.inc({ sync, status: run.status });
    if (run.startedAt && run.finishedAt) this.runDuration.observe({ status: run.status }, (run.finishedAt.getTime() - run.startedAt.getTime()) / 1000);
    this.rowsQueried.inc({ sync }, c.queried ?? 0);
    this.rowsInvalid.inc({ sync }, c.invalid ?? 0);
    for (const operation of OPS) {
      this.rowsPlanned.inc({ sync, operation }, c.planned?.[operation] ?? 0);
      this.rowsSucceeded.inc({ sync, operation }, c.succeeded?.[operation] ?? 0);
      this.rowsRejected.inc({ sync, operation }, c.rejected?.[operation] ?? 0);
    }
  }

  exchanges(connectionId: string, exchanges: { response?: { status: number } }[]): void {
    for (const e of exchanges) this.destinationRequests.inc({ connection: connectionId, status_class: statusClass(e.response?.status) });
  }

  /** A retried request (the request itself is counted from its exchange, which the engine reports). */
  retry(syncId: string, _connectionId: string | undefined, code: string): void {
    const known = /^(rate_limited|http_\d{3}|request_timeout|connection_\w+|network_error|dns_not_found|row_retry)$/.test(code) ? code : 'other';
    this.retries.inc({ sync: syncId, code: known });
    if (code === 'rate_limited') this.throttled.inc({ sync: syncId });
  }

  async text(): Promise<string> {
    return this.registry.metrics();
  }
}

function statusClass(status: number | undefined): string {
  if (!status) return 'error';
  return status >= 200 && status < 600 ? `${Math.floor(status / 100)}xx` : 'error';
}
