import { Type, type Static } from '@sinclair/typebox';
import { and, desc, eq, lt } from 'drizzle-orm';
import { alerts, syncs } from '../db/schema.ts';
import type { Actor } from './context.ts';
import { decodeCursor, iso, pageLimit, requireScope, toPage, type Page } from './common.ts';
import type { ServiceDeps } from './deps.ts';
import { idOfRef } from './refs.ts';

// Alerts raised by syncs' alert rules (src/notify/alerts.ts evaluates them after each run).
// Kinds: run_failed, row_failures, slow_run, consecutive_failures. At most one open alert per
// sync and kind: raised once while the condition holds, resolved by the first healthy run.

export const ALERT_KINDS = ['run_failed', 'row_failures', 'slow_run', 'consecutive_failures'] as const;
export type AlertKind = (typeof ALERT_KINDS)[number];

export const AlertView = Type.Object(
  {
    id: Type.String(),
    syncId: Type.String(),
    kind: Type.Union(ALERT_KINDS.map((k) => Type.Literal(k))),
    status: Type.Union([Type.Literal('open'), Type.Literal('resolved')]),
    summary: Type.String(),
    openedRunId: Type.String(),
    resolvedRunId: Type.Union([Type.String(), Type.Null()]),
    openedAt: Type.String({ format: 'date-time' }),
    resolvedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  },
  { $id: 'Alert' },
);
export type AlertViewT = Static<typeof AlertView>;
export type AlertRow = typeof alerts.$inferSelect;

export function alertView(r: AlertRow): AlertViewT {
  return {
    id: r.id,
    syncId: r.syncId,
    kind: r.kind as AlertKind,
    status: r.status as AlertViewT['status'],
    summary: r.summary,
    openedRunId: r.openedRunId,
    resolvedRunId: r.resolvedRunId,
    openedAt: iso(r.openedAt)!,
    resolvedAt: iso(r.resolvedAt),
  };
}

export class AlertService {
  private readonly deps: ServiceDeps;
  constructor(deps: ServiceDeps) {
    this.deps = deps;
  }

  /** Newest first; filter by status and sync (id or slug; an unknown one matches nothing). */
  async list(actor: Actor, params: { limit?: number; cursor?: string; status?: string; syncId?: string } = {}): Promise<Page<AlertViewT>> {
    requireScope(actor, 'read');
    const limit = pageLimit(params.limit);
    const after = decodeCursor(params.cursor);
    const conds = [eq(alerts.workspaceId, actor.workspaceId)];
    if (after) conds.push(lt(alerts.id, after));
    if (params.status) conds.push(eq(alerts.status, params.status));
    if (params.syncId) {
      const syncId = await idOfRef(this.deps.database.db, syncs, actor.workspaceId, params.syncId);
      if (syncId === null) return { data: [], nextCursor: null };
      conds.push(eq(alerts.syncId, syncId));
    }
    const rows = await this.deps.database.db.select().from(alerts).where(and(...conds)).orderBy(desc(alerts.id)).limit(limit + 1);
    return toPage(rows, limit, alertView);
  }
}
