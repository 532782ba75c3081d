import { and, arrayOverlaps, eq, inArray } from 'drizzle-orm';
import type { Logger } from 'pino';
import type { Database } from '../db/client.ts';
import { runExchanges } from '../db/schema.ts';
import type { WireExchange } from '../connectors/types.ts';
import type { BatchResult } from '../engine/batch.ts';
import type { RunRow } from '../domain/runs.ts';
import { newId } from '../lib/ids.ts';
import { NO_SECRETS, type Redactor } from '../lib/redact.ts';

// Row debugger: every destination request of an acknowledged batch, with its response, is kept
// for BACKHAUL_DEBUGGER_RETENTION_DAYS (0 = off), bodies cut at MAX_BODY characters. Connectors
// report exchanges with credentials redacted; every URL, header and body is passed once more
// through the redactor of the run's destination connection (all its secrets, in every encoding)
// before it is stored. Rows are keyed by
// (run_id, batch) like run_records.batch, and list the primary keys each request carried, so
// GET /v1/runs/{id}/records?primaryKey= can show exactly what was sent for that row.
// One multi-row insert per acknowledged batch, awaited (the executor's hook), so a finished run's
// exchanges are all readable; a failed insert is logged and never fails the run.

export const MAX_BODY = 8 * 1024;

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
  const pending = new Map<string, Set<Promise<void>>>();

  /** Stores a batch's exchanges before the batch's slot is freed, so they are readable once the run is. */
  async function batchDelivered(run: RunRow, batch: number, result: BatchResult): Promise<void> {
    if (o.retentionDays <= 0 || !result.exchanges.length) return;
    const r = o.redactorFor ? await o.redactorFor(run).catch(() => NO_SECRETS) : NO_SECRETS;
    const body = (b: string | undefined) => cut(r, b);
    const bySeq = new Map(result.outcomes.map((r) => [r.op.seq, r.op.pk]));
    const rows = result.exchanges.map(({ exchange: e, seqs }: { exchange: WireExchange; seqs: number[] }) => ({
      id: newId('runExchange'),
      runId: run.id,
      workspaceId: run.workspaceId,
      batch,
      primaryKeys: seqs.map((s) => bySeq.get(s)).filter((pk): pk is string => pk !== undefined),
      request: { method: e.request.method, url: r.text(e.request.url), headers: r.headers(e.request.headers), ...body(e.request.body) },
      response: e.response ? { status: e.response.status, headers: r.headers(e.response.headers), ...body(e.response.body) } : null,
      durationMs: Math.round(e.durationMs),
    }));
    let set = pending.get(run.id);
    if (!set) pending.set(run.id, (set = new Set()));
    const p: Promise<void> = o.database.db
      .insert(runExchanges)
      .values(rows)
      .then(() => undefined)
      .catch((e: unknown) => o.logger.warn({ err: e, runId: run.id, batch }, 'row debugger: could not store exchanges'))
      .finally(() => set.delete(p));
    set.add(p);
    await p;
  }

  /** Waits for a run's exchange writes (before its run.completed goes out). */
  async function flush(runId: string): Promise<void> {
    const set = pending.get(runId);
    if (set) await Promise.all([...set]);
    pending.delete(runId);
  }

  async function purge(): Promise<number> {
    const days = Math.max(o.retentionDays, 0);
    const r = await o.database.sql`delete from run_exchanges where created_at < now() - ${`${days} days`}::interval`;
    return r.count;
  }

  return { batchDelivered, flush, purge };
}

