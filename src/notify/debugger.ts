import type { Logger } from 'pino';
import type { Database } from '../db/client.ts';
import type { WireExchange } from '../connectors/types.ts';
import type { BatchResult } from '../engine/batch.ts';
import type { RunRow } from '../domain/runs.ts';
import { GroupCommit } from '../lib/group-commit.ts';
import { newId } from '../lib/ids.ts';
import { NO_SECRETS, type Redactor } from '../lib/redact.ts';

// Row debugger: every destination request of an acknowledged batch, with its response, is kept
// for BACKHAUL_DEBUGGER_RETENTION_DAYS (0 = off), bodies cut at MAX_BODY characters. Connectors
// report exchanges with credentials redacted; every URL, header and body is passed once more
// through the redactor of the run's destination connection (all its secrets, in every encoding)
// before it is stored. Rows are keyed by
// (run_id, batch) like run_records.batch, and list the primary keys each request carried, so
// GET /v1/runs/{id}/records?primaryKey= can show exactly what was sent for that row.
// Acknowledged batches' exchanges are inserted as they come, those that queue behind an insert in
// flight together, awaited (the executor's hook), so a finished run's
// exchanges are all readable; a failed insert is logged and never fails the run.

export const MAX_BODY = 8 * 1024;

/** A run_exchanges row as inserted (column names). */
interface ExchangeRow {
  id: string;
  run_id: string;
  workspace_id: string;
  batch: number;
  primary_keys: string[];
  request: Record<string, unknown>;
  response: Record<string, unknown> | null;
  duration_ms: number;
}

/** A body as kept: the head of its redacted text, at most MAX_BODY characters. */
function cut(r: Redactor, body: string | undefined): { body?: string; bodyTruncated?: boolean } {
  if (body === undefined) return {};
  const h = r.head(body, MAX_BODY);
  return h.truncated ? { body: h.text, bodyTruncated: true } : { body: h.text };
}

export function createDebugger(o: {
  database: Database;
  logger: Logger;
  retentionDays: number;
  /** The redactor of a run's destination connection (default: none). */
  redactorFor?: (run: RunRow) => Promise<Redactor>;
}) {
  /** Per run: its exchanges, inserted by group commit. */
  const writers = new Map<string, GroupCommit<{ batch: number; rows: ExchangeRow[] }>>();

  const insert = (rows: ExchangeRow[]) =>
    // One JSON parameter expanded by PostgreSQL (the ORM's builder cost ~0.5 ms of CPU a batch, measured at 1M rows).
    o.database.sql`
      insert into run_exchanges (id, run_id, workspace_id, batch, primary_keys, request, response, duration_ms)
      select x.id, x.run_id, x.workspace_id, x.batch, x.primary_keys, x.request, x.response, x.duration_ms
      from jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) as x(id text, run_id text, workspace_id text, batch int, primary_keys text[], request jsonb, response jsonb, duration_ms int)`;

  /**
   * Inserts a run's queued exchanges, all that queued while the previous insert ran in one
   * statement (as checkpoints group batches): one statement per batch cost a round trip each at
   * 100-row batches. A failed group is retried batch by batch, so one unstorable exchange (a NUL
   * in a body) loses only its own batch's. Never throws.
   */
  async function write(runId: string, group: { batch: number; rows: ExchangeRow[] }[]): Promise<void> {
    try {
      await insert(group.flatMap((g) => g.rows));
    } catch (e) {
      for (const g of group) {
        try {
          if (group.length > 1) await insert(g.rows);
          else throw e;
        } catch (e2) {
          o.logger.warn({ err: e2, runId, batch: g.batch }, 'row debugger: could not store exchanges');
        }
      }
    }
  }

  /** Stores a batch's exchanges before the batch's slot is freed, so they are readable once the run is. */
  async function batchDelivered(run: RunRow, batch: number, result: BatchResult): Promise<void> {
    if (o.retentionDays <= 0 || !result.exchanges.length) return;
    const r = o.redactorFor ? await o.redactorFor(run).catch(() => NO_SECRETS) : NO_SECRETS;
    const body = (b: string | undefined) => cut(r, b);
    const bySeq = new Map(result.outcomes.map((r) => [r.op.seq, r.op.pk]));
    const rows: ExchangeRow[] = result.exchanges.map(({ exchange: e, seqs }: { exchange: WireExchange; seqs: number[] }) => ({
      id: newId('runExchange'),
      run_id: run.id,
      workspace_id: run.workspaceId,
      batch,
      primary_keys: seqs.map((s) => bySeq.get(s)).filter((pk): pk is string => pk !== undefined),
      request: { method: e.request.method, url: r.text(e.request.url), headers: r.headers(e.request.headers), ...body(e.request.body) },
      response: e.response ? { status: e.response.status, headers: r.headers(e.response.headers), ...body(e.response.body) } : null,
      duration_ms: Math.round(e.durationMs),
    }));
    let w = writers.get(run.id);
    if (!w) writers.set(run.id, (w = new GroupCommit((group) => write(run.id, group))));
    await w.add({ batch, rows });
  }

  /** Waits for a run's exchange writes (before its run.completed goes out). */
  async function flush(runId: string): Promise<void> {
    await writers.get(runId)?.idle();
    writers.delete(runId);
  }

  async function purge(): Promise<number> {
    const days = Math.max(o.retentionDays, 0);
    const r = await o.database.sql`delete from run_exchanges where created_at < now() - ${`${days} days`}::interval`;
    return r.count;
  }

  return { batchDelivered, flush, purge };
}

