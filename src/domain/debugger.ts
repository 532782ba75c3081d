import { and, arrayOverlaps, eq, inArray } from 'drizzle-orm';
import type { Database } from '../db/client.ts';
import { runExchanges } from '../db/schema.ts';

// The row debugger's read side: the destination requests that carried a row (written by
// src/notify/debugger.ts for BACKHAUL_DEBUGGER_RETENTION_DAYS), shown with its run records.

export interface DebugExchange {
  request: { method: string; url: string; headers: Record<string, string>; body?: string; bodyTruncated?: boolean };
  response: { status: number; headers: Record<string, string>; body?: string; bodyTruncated?: boolean } | null;
  durationMs: number;
  batch: number;
  at: string;
}

/** The exchanges that carried these rows of a run (by the batches recorded on run_records). */
export async function exchangesForRecords(database: Database, runId: string, records: { primaryKey: string; batch: number | null }[]): Promise<Map<string, DebugExchange[]>> {
  const out = new Map<string, DebugExchange[]>();
  const batches = [...new Set(records.map((r) => r.batch).filter((b): b is number => b !== null))];
  if (!batches.length) return out;
  const rows = await database.db
    .select()
    .from(runExchanges)
    .where(and(eq(runExchanges.runId, runId), inArray(runExchanges.batch, batches), arrayOverlaps(runExchanges.primaryKeys, records.map((r) => r.primaryKey))))
    .orderBy(runExchanges.id);
  for (const r of records) {
    if (r.batch === null) continue;
    const list = rows
      .filter((x) => x.batch === r.batch && x.primaryKeys.includes(r.primaryKey))
      .map((x) => ({
        request: x.request as DebugExchange['request'],
        response: x.response as DebugExchange['response'],
        durationMs: x.durationMs,
        batch: x.batch,
        at: x.createdAt.toISOString(),
      }));
    out.set(r.primaryKey, list);
  }
  return out;
}
