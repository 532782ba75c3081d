import type { Readable } from 'node:stream';
import { listConnectorTypes } from '../connectors/registry.ts';
import { listAuditEvents } from '../domain/audit.ts';
import { encodeCursor, requireScope, type Page } from '../domain/common.ts';
import { cursorAfter, type ListOptions, type OrderField } from '../domain/list.ts';
import type { AlertViewT } from '../domain/alerts.ts';
import type { Actor } from '../domain/context.ts';
import type { ConnectionViewT } from '../domain/connections.ts';
import type { MappingViewT } from '../domain/mappings.ts';
import type { ModelViewT } from '../domain/models.ts';
import type { RunViewT } from '../domain/runs.ts';
import type { Services } from '../domain/services.ts';
import type { SyncViewT } from '../domain/syncs.ts';
import type { WebhookDeliveryViewT, WebhookEndpointViewT } from '../domain/webhooks.ts';
import { isAppError, UnauthorizedError, ValidationError } from '../errors.ts';
import { toGraphqlError } from './errors.ts';
import { createLoaders, type Loaders } from './loaders.ts';
import { DateTimeScalar, JSONScalar, plain } from './scalars.ts';

// Resolvers: thin adapters from GraphQL arguments to the domain services, the same calls the REST
// routes make. Nested relations go through the per-request loaders (src/graphql/loaders.ts).

export interface GqlContext {
  actor: Actor | null;
  loaders?: Loaders;
  pubsub: { subscribe(topic: string): Promise<Readable> };
}

export interface RunNotification {
  runId: string;
  syncId: string;
  workspaceId: string;
  status: string;
  phase: string | null;
}

export function runTopic(workspaceId: string, syncId: string): string {
  return `run:${workspaceId}:${syncId}`;
}

type Args = Record<string, any>;

function actorOf(ctx: GqlContext): Actor {
  if (!ctx.actor) throw new UnauthorizedError();
  return ctx.actor;
}

/** If-Match from `expectedVersion`: the services compare it as REST's ETag. */
function ifMatch(expectedVersion: number | null | undefined): string | undefined {
  return expectedVersion === null || expectedVersion === undefined ? undefined : `"${expectedVersion}"`;
}

function pageParams(a: Args): { limit?: number; cursor?: string } {
  return { limit: a.first ?? undefined, cursor: a.after ?? undefined };
}

/** Page, ordering and search arguments of the ordered lists (connections, models, syncs). */
function listParams(a: Args): ListOptions {
  return { ...pageParams(a), orderBy: a.orderBy?.field ?? undefined, direction: a.orderBy?.direction ?? undefined, search: a.search ?? undefined };
}

/** A service page as a Relay connection; every cursor is the REST API's cursor after that node. */
function connection<T extends { id: string }>(p: Page<T>, orderBy?: OrderField) {
  const edges = p.data.map((node) => ({
    cursor: orderBy && orderBy !== 'createdAt' ? cursorAfter(node as unknown as Parameters<typeof cursorAfter>[0], orderBy) : encodeCursor(node.id),
    node,
  }));
  return {
    edges,
    nodes: p.data,
    pageInfo: { hasNextPage: p.nextCursor !== null, endCursor: p.nextCursor ?? edges.at(-1)?.cursor ?? null },
  };
}

async function orNull<T>(p: Promise<T>): Promise<T | null> {
  try {
    return await p;
  } catch (e) {
    if (isAppError(e) && e.status === 404) return null;
    throw e;
  }
}

function withoutNulls(v: unknown): unknown {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return v;
  return Object.fromEntries(Object.entries(v).filter(([, x]) => x !== null));
}

/** GraphQL input → the REST body the services validate. A schedule's unused fields may be sent as null. */
function body(input: unknown): any {
  const b = plain(input) as Record<string, unknown>;
  if (b && typeof b === 'object' && b.schedule) b.schedule = withoutNulls(b.schedule);
  return b;
}

const TYPE_BY_PREFIX: Record<string, string> = {
  conn: 'Connection',
  mdl: 'Model',
  sync: 'Sync',
  map: 'Mapping',
  run: 'Run',
  key: 'ApiKey',
  aud: 'AuditEvent',
  ws: 'Workspace',
  wh: 'WebhookEndpoint',
  whd: 'WebhookDelivery',
  ach: 'AlertChannel',
  alr: 'Alert',
};

function prefixOf(id: string): string {
  const i = id.indexOf('_');
  return i > 0 ? id.slice(0, i) : '';
}

export function buildResolvers(services: Services) {
  const loadersOf = (ctx: GqlContext): Loaders => (ctx.loaders ??= createLoaders(services, actorOf(ctx)));

  async function nodeById(ctx: GqlContext, id: string): Promise<unknown> {
    const actor = actorOf(ctx);
    const l = loadersOf(ctx);
    const found = async <V>(scope: 'read' | 'admin', p: () => Promise<V | undefined>) => {
      requireScope(actor, scope);
      return (await p()) ?? null;
    };
    switch (prefixOf(id)) {
      case 'conn':
        return found('read', () => l.connection.load(id));
      case 'mdl':
        return found('read', () => l.model.load(id));
      case 'sync':
        return found('read', () => l.sync.load(id));
      case 'map':
        return found('read', () => l.mapping.load(id));
      case 'run':
        return orNull(services.runs.get(actor, id));
      case 'key':
        return found('admin', () => l.apiKey.load(id));
      case 'aud':
        return found('read', () => l.auditEvent.load(id));
      case 'ws':
        return found('read', () => l.workspace.load(id));
      case 'wh':
        return found('read', () => l.webhookEndpoint.load(id));
      case 'whd':
        return found('read', () => l.webhookDelivery.load(id));
      case 'ach':
        return found('read', () => l.alertChannel.load(id));
      case 'alr':
        return found('read', () => l.alert.load(id));
      default:
        return null;
    }
  }

  /** Deletes by the id behind `ref`, so the payload can name what was deleted. */
  async function deleted(get: () => Promise<{ id: string }>, del: (id: string) => Promise<void>) {
    const cur = await get();
    await del(cur.id);
    return { deletedId: cur.id };
  }

  return {
    JSON: JSONScalar,
    DateTime: DateTimeScalar,

    Node: {
      resolveType: (obj: { id: string }) => TYPE_BY_PREFIX[prefixOf(obj.id)] ?? null,
    },
    Schedule: {
      resolveType: (s: { type: string }) => ({ manual: 'ManualSchedule', interval: 'IntervalSchedule', cron: 'CronSchedule' })[s.type] ?? null,
    },
    CronSchedule: {
      timezone: (s: { timezone?: string }) => s.timezone ?? 'UTC',
    },
    MappingSource: {
      resolveType: (s: Record<string, unknown>) =>
        'column' in s ? 'ColumnSource' : 'static' in s ? 'StaticSource' : 'template' in s ? 'TemplateSource' : 'lookup' in s ? 'LookupSource' : null,
    },

    Query: {
      node: (_: unknown, a: Args, ctx: GqlContext) => nodeById(ctx, a.id),
      nodes: (_: unknown, a: Args, ctx: GqlContext) => {
        const ids = a.ids as string[];
        if (ids.length > 100) throw new ValidationError('nodes takes at most 100 ids.', [{ path: '/ids', message: 'must have at most 100 items' }]);
        return Promise.all(ids.map((id) => nodeById(ctx, id)));
      },
      viewer: (_: unknown, _a: Args, ctx: GqlContext) => {
        const actor = actorOf(ctx);
        return { keyId: actor.keyId, scopes: actor.scopes, owner: actor.owner, workspace: () => loadersOf(ctx).workspace.load(actor.workspaceId) };
      },
      connectors: (_: unknown, _a: Args, ctx: GqlContext) => {
        requireScope(actorOf(ctx), 'read');
        return listConnectorTypes().map((t) => ({ type: t.type, label: t.label, roles: t.roles, configSchema: t.configSchema, secrets: t.secrets, capabilities: t.capabilities ?? null }));
      },
      connections: async (_: unknown, a: Args, ctx: GqlContext) =>
        connection(await services.connections.list(actorOf(ctx), { ...listParams(a), type: a.type ?? undefined }), a.orderBy?.field),
      connection: (_: unknown, a: Args, ctx: GqlContext) => orNull(services.connections.get(actorOf(ctx), a.ref)),
      models: async (_: unknown, a: Args, ctx: GqlContext) =>
        connection(await services.models.list(actorOf(ctx), { ...listParams(a), connectionId: a.connectionId ?? undefined }), a.orderBy?.field),
      model: (_: unknown, a: Args, ctx: GqlContext) => orNull(services.models.get(actorOf(ctx), a.ref)),
      syncs: async (_: unknown, a: Args, ctx: GqlContext) =>
        connection(
          await services.syncs.list(actorOf(ctx), {
            ...listParams(a),
            modelId: a.modelId ?? undefined,
            destinationId: a.destinationId ?? undefined,
            enabled: a.enabled ?? undefined,
          }),
          a.orderBy?.field,
        ),
      sync: (_: unknown, a: Args, ctx: GqlContext) => orNull(services.syncs.get(actorOf(ctx), a.ref)),
      run: (_: unknown, a: Args, ctx: GqlContext) => orNull(services.runs.get(actorOf(ctx), a.id)),
      apiKeys: async (_: unknown, a: Args, ctx: GqlContext) => connection(await services.apiKeys.list(actorOf(ctx), pageParams(a))),
      auditEvents: async (_: unknown, a: Args, ctx: GqlContext) =>
        connection(
          await listAuditEvents(services.deps.database.db, actorOf(ctx), {
            ...pageParams(a),
            resourceType: a.resourceType ?? undefined,
            resourceId: a.resourceId ?? undefined,
            since: a.since ?? undefined,
            until: a.until ?? undefined,
          }),
        ),
      workspaces: async (_: unknown, a: Args, ctx: GqlContext) => connection(await services.apiKeys.listWorkspaces(actorOf(ctx), pageParams(a))),
      webhookEndpoints: async (_: unknown, a: Args, ctx: GqlContext) => connection(await services.webhooks.list(actorOf(ctx), pageParams(a))),
      webhookEndpoint: (_: unknown, a: Args, ctx: GqlContext) => orNull(services.webhooks.get(actorOf(ctx), a.ref)),
      callbackSecret: (_: unknown, _a: Args, ctx: GqlContext) => services.webhooks.callbackSecret(actorOf(ctx)),
      alertChannels: async (_: unknown, a: Args, ctx: GqlContext) => connection(await services.alertChannels.list(actorOf(ctx), pageParams(a))),
      alertChannel: (_: unknown, a: Args, ctx: GqlContext) => orNull(services.alertChannels.get(actorOf(ctx), a.ref)),
      alerts: async (_: unknown, a: Args, ctx: GqlContext) =>
        connection(await services.alerts.list(actorOf(ctx), { ...pageParams(a), status: a.status ?? undefined, syncId: a.syncId ?? undefined })),
    },

    WebhookEndpoint: {
      deliveries: async (e: WebhookEndpointViewT, a: Args, ctx: GqlContext) =>
        connection(await services.webhooks.deliveries(actorOf(ctx), e.id, { ...pageParams(a), status: a.status ?? undefined, eventType: a.eventType ?? undefined })),
    },

    WebhookDelivery: {
      endpoint: async (d: WebhookDeliveryViewT, _a: Args, ctx: GqlContext) => (d.endpointId ? ((await loadersOf(ctx).webhookEndpoint.load(d.endpointId)) ?? null) : null),
    },

    Alert: {
      sync: async (al: AlertViewT, _a: Args, ctx: GqlContext) => (await loadersOf(ctx).sync.load(al.syncId)) ?? null,
    },

    Viewer: {
      workspace: (v: { workspace: () => Promise<unknown> }) => v.workspace(),
    },

    Connection: {
      destinationObjects: (c: ConnectionViewT, _a: Args, ctx: GqlContext) => services.connections.objects(actorOf(ctx), c.id),
      destinationFields: (c: ConnectionViewT, a: Args, ctx: GqlContext) => services.connections.fields(actorOf(ctx), c.id, a.object),
    },

    Model: {
      connection: async (m: ModelViewT, _a: Args, ctx: GqlContext) => (await loadersOf(ctx).connection.load(m.connectionId)) ?? null,
      columns: (m: ModelViewT, _a: Args, ctx: GqlContext) => services.models.columns(actorOf(ctx), m.id),
      preview: (m: ModelViewT, a: Args, ctx: GqlContext) => services.models.preview(actorOf(ctx), m.id, { limit: a.limit ?? undefined, timeoutMs: a.timeoutMs ?? undefined }),
      syncs: async (m: ModelViewT, a: Args, ctx: GqlContext) => connection(await services.syncs.list(actorOf(ctx), { ...pageParams(a), modelId: m.id, enabled: a.enabled ?? undefined })),
    },

    Sync: {
      model: async (s: SyncViewT, _a: Args, ctx: GqlContext) => (await loadersOf(ctx).model.load(s.modelId)) ?? null,
      destination: async (s: SyncViewT, _a: Args, ctx: GqlContext) => (await loadersOf(ctx).connection.load(s.destinationId)) ?? null,
      mappings: async (s: SyncViewT, _a: Args, ctx: GqlContext) => (await loadersOf(ctx).mappingsBySync.load(s.id)) ?? [],
      lastRun: async (s: SyncViewT, _a: Args, ctx: GqlContext) => (await loadersOf(ctx).lastRunBySync.load(s.id)) ?? null,
      runs: async (s: SyncViewT, a: Args, ctx: GqlContext) => connection(await services.runs.listForSync(actorOf(ctx), s.id, { ...pageParams(a), status: a.status ?? undefined })),
      recordHistory: async (s: SyncViewT, a: Args, ctx: GqlContext) => {
        const p = await services.runs.history(actorOf(ctx), s.id, a.primaryKey, pageParams(a));
        return { nodes: p.data, pageInfo: { hasNextPage: p.nextCursor !== null, endCursor: p.nextCursor } };
      },
    },

    Mapping: {
      sync: async (m: MappingViewT, _a: Args, ctx: GqlContext) => (await loadersOf(ctx).sync.load(m.syncId)) ?? null,
    },

    Run: {
      sync: async (r: RunViewT, _a: Args, ctx: GqlContext) => (await loadersOf(ctx).sync.load(r.syncId)) ?? null,
      records: async (r: RunViewT, a: Args, ctx: GqlContext) => {
        const p = await services.runs.records(actorOf(ctx), r.id, {
          ...pageParams(a),
          status: a.status ?? undefined,
          operation: a.operation ?? undefined,
          primaryKey: a.primaryKey ?? undefined,
          redelivered: a.redelivered ?? undefined,
        });
        return { nodes: p.data, pageInfo: { hasNextPage: p.nextCursor !== null, endCursor: p.nextCursor } };
      },
      deliveries: async (r: RunViewT, a: Args, ctx: GqlContext) => connection(await services.webhooks.runDeliveries(actorOf(ctx), r.id, pageParams(a))),
    },

    RunUpdate: {
      run: (u: RunNotification, _a: Args, ctx: GqlContext) => orNull(services.runs.get(actorOf(ctx), u.runId)),
    },

    Mutation: {
      createConnection: (_: unknown, a: Args, ctx: GqlContext) => services.connections.create(actorOf(ctx), body(a.input)),
      updateConnection: (_: unknown, a: Args, ctx: GqlContext) => services.connections.update(actorOf(ctx), a.ref, body(a.input), ifMatch(a.expectedVersion)),
      replaceConnection: (_: unknown, a: Args, ctx: GqlContext) => services.connections.put(actorOf(ctx), a.ref, body(a.input), ifMatch(a.expectedVersion)),
      deleteConnection: (_: unknown, a: Args, ctx: GqlContext) =>
        deleted(
          () => services.connections.get(actorOf(ctx), a.ref),
          (id) => services.connections.delete(actorOf(ctx), id, ifMatch(a.expectedVersion)),
        ),
      testConnection: (_: unknown, a: Args, ctx: GqlContext) => services.connections.test(actorOf(ctx), a.ref),

      createModel: (_: unknown, a: Args, ctx: GqlContext) => services.models.create(actorOf(ctx), body(a.input), { validate: a.validate !== false }),
      updateModel: (_: unknown, a: Args, ctx: GqlContext) => services.models.update(actorOf(ctx), a.ref, body(a.input), ifMatch(a.expectedVersion), { validate: a.validate !== false }),
      replaceModel: (_: unknown, a: Args, ctx: GqlContext) => services.models.put(actorOf(ctx), a.ref, body(a.input), ifMatch(a.expectedVersion), { validate: a.validate !== false }),
      deleteModel: (_: unknown, a: Args, ctx: GqlContext) =>
        deleted(
          () => services.models.get(actorOf(ctx), a.ref),
          (id) => services.models.delete(actorOf(ctx), id, ifMatch(a.expectedVersion)),
        ),

      createSync: (_: unknown, a: Args, ctx: GqlContext) => services.syncs.create(actorOf(ctx), body(a.input)),
      updateSync: (_: unknown, a: Args, ctx: GqlContext) => services.syncs.update(actorOf(ctx), a.ref, body(a.input), ifMatch(a.expectedVersion)),
      replaceSync: (_: unknown, a: Args, ctx: GqlContext) => services.syncs.put(actorOf(ctx), a.ref, body(a.input), ifMatch(a.expectedVersion)),
      deleteSync: (_: unknown, a: Args, ctx: GqlContext) =>
        deleted(
          () => services.syncs.get(actorOf(ctx), a.ref),
          (id) => services.syncs.delete(actorOf(ctx), id, ifMatch(a.expectedVersion)),
        ),

      createMapping: (_: unknown, a: Args, ctx: GqlContext) => services.mappings.create(actorOf(ctx), a.syncRef, body(a.input)),
      updateMapping: (_: unknown, a: Args, ctx: GqlContext) => services.mappings.update(actorOf(ctx), a.syncRef, a.id, body(a.input), ifMatch(a.expectedVersion)),
      replaceMapping: (_: unknown, a: Args, ctx: GqlContext) => services.mappings.update(actorOf(ctx), a.syncRef, a.id, body(a.input), ifMatch(a.expectedVersion), true),
      deleteMapping: async (_: unknown, a: Args, ctx: GqlContext) => {
        await services.mappings.delete(actorOf(ctx), a.syncRef, a.id, ifMatch(a.expectedVersion));
        return { deletedId: a.id };
      },
      setMappings: (_: unknown, a: Args, ctx: GqlContext) => services.mappings.replaceAll(actorOf(ctx), a.syncRef, body(a.mappings), ifMatch(a.expectedSyncVersion)),

      createApiKey: async (_: unknown, a: Args, ctx: GqlContext) => {
        const created = await services.apiKeys.create(actorOf(ctx), body(a.input));
        return { apiKey: created, token: created.token };
      },
      revokeApiKey: async (_: unknown, a: Args, ctx: GqlContext) => {
        await services.apiKeys.revoke(actorOf(ctx), a.id);
        return { deletedId: a.id };
      },
      createWorkspace: async (_: unknown, a: Args, ctx: GqlContext) => {
        const r = await services.apiKeys.createWorkspace(actorOf(ctx), body(a.input));
        return { workspace: r.workspace, apiKey: r.apiKey, token: r.apiKey.token };
      },

      triggerRun: (_: unknown, a: Args, ctx: GqlContext) =>
        services.runs.trigger(actorOf(ctx), a.syncRef, body({ fullResync: a.fullResync ?? undefined, dryRun: a.dryRun ?? undefined, allowDeletions: a.allowDeletions ?? undefined, callbackUrl: a.callbackUrl ?? undefined })),
      cancelRun: (_: unknown, a: Args, ctx: GqlContext) => services.runs.cancel(actorOf(ctx), a.id),
      suggestMappings: async (_: unknown, a: Args, ctx: GqlContext) => {
        const r = await services.mappings.suggest(actorOf(ctx), a.syncRef, { apply: a.apply ?? false, minConfidence: a.minConfidence ?? undefined });
        return { suggestions: r.data.map((d) => ({ ...d, sourceColumn: d.source.column })), applied: r.applied };
      },

      // Webhook endpoints: the secret is only ever in these payloads (as REST shows it only in
      // the answers to a create or a rotation); the WebhookEndpoint type has no secret field.
      createWebhookEndpoint: async (_: unknown, a: Args, ctx: GqlContext) => {
        const created = await services.webhooks.create(actorOf(ctx), body(a.input));
        return { webhookEndpoint: created, secret: created.secret };
      },
      updateWebhookEndpoint: (_: unknown, a: Args, ctx: GqlContext) => services.webhooks.update(actorOf(ctx), a.ref, body(a.input), ifMatch(a.expectedVersion)),
      replaceWebhookEndpoint: async (_: unknown, a: Args, ctx: GqlContext) => {
        const r = await services.webhooks.put(actorOf(ctx), a.ref, body(a.input), ifMatch(a.expectedVersion));
        return { created: r.created, webhookEndpoint: r.value, secret: r.value.secret ?? null };
      },
      deleteWebhookEndpoint: (_: unknown, a: Args, ctx: GqlContext) =>
        deleted(
          () => services.webhooks.get(actorOf(ctx), a.ref),
          (id) => services.webhooks.delete(actorOf(ctx), id, ifMatch(a.expectedVersion)),
        ),
      rotateWebhookSecret: async (_: unknown, a: Args, ctx: GqlContext) => {
        const r = await services.webhooks.rotateSecret(actorOf(ctx), a.ref, body(a.input ?? {}));
        return { webhookEndpoint: r, secret: r.secret };
      },
      redeliverWebhook: (_: unknown, a: Args, ctx: GqlContext) => services.webhooks.redeliver(actorOf(ctx), a.endpointRef, a.id),
      rotateCallbackSecret: async (_: unknown, a: Args, ctx: GqlContext) => {
        const { secret, ...callbackSecret } = await services.webhooks.rotateCallbackSecret(actorOf(ctx), body(a.input ?? {}));
        return { callbackSecret, secret };
      },

      createAlertChannel: (_: unknown, a: Args, ctx: GqlContext) => services.alertChannels.create(actorOf(ctx), body(a.input)),
      updateAlertChannel: (_: unknown, a: Args, ctx: GqlContext) => services.alertChannels.update(actorOf(ctx), a.ref, body(a.input), ifMatch(a.expectedVersion)),
      replaceAlertChannel: async (_: unknown, a: Args, ctx: GqlContext) => {
        const r = await services.alertChannels.put(actorOf(ctx), a.ref, body(a.input), ifMatch(a.expectedVersion));
        return { created: r.created, alertChannel: r.value };
      },
      deleteAlertChannel: (_: unknown, a: Args, ctx: GqlContext) =>
        deleted(
          () => services.alertChannels.get(actorOf(ctx), a.ref),
          (id) => services.alertChannels.delete(actorOf(ctx), id, ifMatch(a.expectedVersion)),
        ),
      testAlertChannel: (_: unknown, a: Args, ctx: GqlContext) => services.alertChannels.test(actorOf(ctx), a.ref),
    },

    Subscription: {
      runUpdated: {
        // Resolves the sync (id or slug) in the caller's workspace, then listens on a topic that
        // names both: notifications of other workspaces never reach this subscriber.
        subscribe: async (_: unknown, a: Args, ctx: GqlContext) => {
          try {
            const actor = actorOf(ctx);
            const sync = await services.syncs.get(actor, a.syncId);
            return await ctx.pubsub.subscribe(runTopic(actor.workspaceId, sync.id));
          } catch (e) {
            throw toGraphqlError(e);
          }
        },
        resolve: (payload: RunNotification, _a: Args, ctx: GqlContext) => {
          // One context serves every event of a subscription: start each from fresh data.
          ctx.loaders?.clear();
          return payload;
        },
      },
    },
  };
}
