import { and, asc, eq, inArray, isNull } from 'drizzle-orm';
import { alertChannels, alerts, apiKeys, auditEvents, connections, mappings, models, syncs, webhookDeliveries, webhookEndpoints, workspaces } from '../db/schema.ts';
import { channelView, type AlertChannelViewT } from '../domain/alert-channels.ts';
import { alertView, type AlertViewT } from '../domain/alerts.ts';
import { apiKeyView, workspaceView, type ApiKeyViewT, type WorkspaceViewT } from '../domain/api-keys.ts';
import type { AuditEventView } from '../domain/audit.ts';
import { iso } from '../domain/common.ts';
import { connectionView, type ConnectionViewT } from '../domain/connections.ts';
import type { Actor } from '../domain/context.ts';
import { mappingView, type MappingViewT } from '../domain/mappings.ts';
import { modelView, type ModelViewT } from '../domain/models.ts';
import type { RunViewT } from '../domain/runs.ts';
import type { Services } from '../domain/services.ts';
import { syncView, type SyncViewT } from '../domain/syncs.ts';
import { deliveryView, endpointView, type WebhookDeliveryViewT, type WebhookEndpointViewT } from '../domain/webhooks.ts';

// Per-request batch loaders (one set per GraphQL request), so a list of N syncs with their model,
// destination, mappings and last run costs a fixed number of queries, not N+1. They only read,
// every query is filtered on the caller's workspace, and rows become the services' own views;
// rules (scopes, validation, writes) stay in the services.

type Resolver<V> = { resolve: (v: V | undefined) => void; reject: (e: unknown) => void };

/** Collects the keys asked for during one pass of execution and fetches them in one query. */
export class Batcher<K, V> {
  private readonly fetch: (keys: K[]) => Promise<Map<K, V>>;
  private readonly cache = new Map<K, Promise<V | undefined>>();
  private queue = new Map<K, Resolver<V>[]>();
  private scheduled = false;

  constructor(fetch: (keys: K[]) => Promise<Map<K, V>>) {
    this.fetch = fetch;
  }

  load(key: K): Promise<V | undefined> {
    const hit = this.cache.get(key);
    if (hit) return hit;
    const p = new Promise<V | undefined>((resolve, reject) => {
      const waiting = this.queue.get(key);
      if (waiting) waiting.push({ resolve, reject });
      else this.queue.set(key, [{ resolve, reject }]);
    });
    this.cache.set(key, p);
    if (!this.scheduled) {
      this.scheduled = true;
      // After the current pass of resolvers (and their promise callbacks) has asked for its keys.
      setImmediate(() => void this.dispatch());
    }
    return p;
  }

  loadMany(keys: K[]): Promise<(V | undefined)[]> {
    return Promise.all(keys.map((k) => this.load(k)));
  }

  /** Drop cached values (a subscription reuses its context across events). */
  clear(): void {
    this.cache.clear();
  }

  private async dispatch(): Promise<void> {
    const batch = this.queue;
    this.queue = new Map();
    this.scheduled = false;
    try {
      const found = await this.fetch([...batch.keys()]);
      for (const [k, waiting] of batch) for (const w of waiting) w.resolve(found.get(k));
    } catch (e) {
      for (const [k, waiting] of batch) {
        this.cache.delete(k);
        for (const w of waiting) w.reject(e);
      }
    }
  }
}

export interface Loaders {
  connection: Batcher<string, ConnectionViewT>;
  model: Batcher<string, ModelViewT>;
  sync: Batcher<string, SyncViewT>;
  mapping: Batcher<string, MappingViewT>;
  mappingsBySync: Batcher<string, MappingViewT[]>;
  lastRunBySync: Batcher<string, RunViewT>;
  apiKey: Batcher<string, ApiKeyViewT>;
  auditEvent: Batcher<string, AuditEventView>;
  workspace: Batcher<string, WorkspaceViewT>;
  webhookEndpoint: Batcher<string, WebhookEndpointViewT>;
  webhookDelivery: Batcher<string, WebhookDeliveryViewT>;
  alertChannel: Batcher<string, AlertChannelViewT>;
  alert: Batcher<string, AlertViewT>;
  clear(): void;
}

function byId<R extends { id: string }, V>(rows: R[], view: (r: R) => V): Map<string, V> {
  return new Map(rows.map((r) => [r.id, view(r)]));
}

export function createLoaders(services: Services, actor: Actor): Loaders {
  const db = services.deps.database.db;
  const ws = actor.workspaceId;
  const loaders: Omit<Loaders, 'clear'> = {
    connection: new Batcher(async (ids) =>
      byId(await db.select().from(connections).where(and(eq(connections.workspaceId, ws), inArray(connections.id, ids))), connectionView),
    ),
    model: new Batcher(async (ids) => byId(await db.select().from(models).where(and(eq(models.workspaceId, ws), inArray(models.id, ids))), modelView)),
    sync: new Batcher(async (ids) => byId(await db.select().from(syncs).where(and(eq(syncs.workspaceId, ws), inArray(syncs.id, ids))), syncView)),
    mapping: new Batcher(async (ids) => byId(await db.select().from(mappings).where(and(eq(mappings.workspaceId, ws), inArray(mappings.id, ids))), mappingView)),
    mappingsBySync: new Batcher(async (syncIds) => {
      const rows = await db
        .select()
        .from(mappings)
        .where(and(eq(mappings.workspaceId, ws), inArray(mappings.syncId, syncIds)))
        .orderBy(asc(mappings.id));
      const out = new Map<string, MappingViewT[]>(syncIds.map((id) => [id, []]));
      for (const r of rows) out.get(r.syncId)?.push(mappingView(r));
      return out;
    }),
    lastRunBySync: new Batcher((syncIds) => services.runs.latestBySyncIds(ws, syncIds)),
    apiKey: new Batcher(async (ids) =>
      byId(await db.select().from(apiKeys).where(and(eq(apiKeys.workspaceId, ws), inArray(apiKeys.id, ids), isNull(apiKeys.revokedAt))), apiKeyView),
    ),
    auditEvent: new Batcher(async (ids) =>
      byId(await db.select().from(auditEvents).where(and(eq(auditEvents.workspaceId, ws), inArray(auditEvents.id, ids))), (r) => ({
        id: r.id,
        action: r.action,
        resourceType: r.resourceType,
        resourceId: r.resourceId,
        changedFields: r.changedFields,
        actorKeyId: r.actorKeyId,
        requestId: r.requestId,
        createdAt: iso(r.createdAt)!,
      })),
    ),
    // A workspace is visible to its own keys, and every workspace to owner keys (as in REST).
    workspace: new Batcher(async (ids) => {
      const visible = actor.owner ? ids : ids.filter((id) => id === ws);
      if (!visible.length) return new Map();
      return byId(await db.select().from(workspaces).where(inArray(workspaces.id, visible)), workspaceView);
    }),
    // Views without secrets (endpointView only shows one when given it explicitly).
    webhookEndpoint: new Batcher(async (ids) =>
      byId(await db.select().from(webhookEndpoints).where(and(eq(webhookEndpoints.workspaceId, ws), inArray(webhookEndpoints.id, ids))), (r) => endpointView(r)),
    ),
    webhookDelivery: new Batcher(async (ids) =>
      byId(await db.select().from(webhookDeliveries).where(and(eq(webhookDeliveries.workspaceId, ws), inArray(webhookDeliveries.id, ids))), deliveryView),
    ),
    alertChannel: new Batcher(async (ids) =>
      byId(await db.select().from(alertChannels).where(and(eq(alertChannels.workspaceId, ws), inArray(alertChannels.id, ids))), channelView),
    ),
    alert: new Batcher(async (ids) => byId(await db.select().from(alerts).where(and(eq(alerts.workspaceId, ws), inArray(alerts.id, ids))), alertView)),
  };
  return {
    ...loaders,
    clear() {
      for (const l of Object.values(loaders)) l.clear();
    },
  };
}
