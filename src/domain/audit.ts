import { and, desc, eq, gte, lt, lte, type SQL } from 'drizzle-orm';
import { auditEvents } from '../db/schema.ts';
import type { Tx } from '../db/client.ts';
import { newId } from '../lib/ids.ts';
import type { Actor } from './context.ts';
import { decodeCursor, iso, pageLimit, requireScope, toPage, type Page } from './common.ts';

// Who changed what, when, from which key. Written in the same transaction as the change, and
// carrying field names only: values (and so secrets) never reach the audit log.

export type AuditAction = 'create' | 'update' | 'replace' | 'delete' | 'rotate' | 'trigger' | 'cancel';

export async function recordAudit(
  tx: Tx,
  actor: Actor,
  action: AuditAction,
  resourceType: string,
  resourceId: string,
  changed: string[] = [],
): Promise<void> {
  await tx.insert(auditEvents).values({
    id: newId('audit'),
    workspaceId: actor.workspaceId,
    actorKeyId: actor.keyId,
    action,
    resourceType,
    resourceId,
    changedFields: changed,
    requestId: actor.requestId ?? null,
  });
}

export interface AuditEventView {
  id: string;
  action: string;
  resourceType: string;
  resourceId: string;
  changedFields: string[];
  actorKeyId: string | null;
  requestId: string | null;
  createdAt: string;
}

export interface AuditFilter {
  resourceType?: string;
  resourceId?: string;
  since?: string;
  until?: string;
}

export async function listAuditEvents(db: Tx, actor: Actor, filter: AuditFilter & { limit?: number; cursor?: string }): Promise<Page<AuditEventView>> {
  requireScope(actor, 'read');
  const limit = pageLimit(filter.limit);
  const after = decodeCursor(filter.cursor);
  const conds: SQL[] = [eq(auditEvents.workspaceId, actor.workspaceId)];
  if (filter.resourceType) conds.push(eq(auditEvents.resourceType, filter.resourceType));
  if (filter.resourceId) conds.push(eq(auditEvents.resourceId, filter.resourceId));
  if (filter.since) conds.push(gte(auditEvents.createdAt, new Date(filter.since)));
  if (filter.until) conds.push(lte(auditEvents.createdAt, new Date(filter.until)));
  // Newest first: the usual question is "what just changed".
  if (after) conds.push(lt(auditEvents.id, after));
  const rows = await db
    .select()
    .from(auditEvents)
    .where(and(...conds))
    .orderBy(desc(auditEvents.id))
    .limit(limit + 1);
  return toPage(rows, limit, (r) => ({
    id: r.id,
    action: r.action,
    resourceType: r.resourceType,
    resourceId: r.resourceId,
    changedFields: r.changedFields,
    actorKeyId: r.actorKeyId,
    requestId: r.requestId,
    createdAt: iso(r.createdAt)!,
  }));
}
