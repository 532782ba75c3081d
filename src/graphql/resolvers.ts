import type { Readable } from 'node:stream';
import { listConnectorTypes } from '../connectors/registry.ts';
import { listAuditEvents } from '../domain/audit.ts';
import { encodeCursor, pageLimit, requireScope, type Page } from '../domain/common.ts';
import { cursorAfter, type ListOptions, type OrderField } from '../domain/list.ts';
import type { Actor } from '../domain/context.ts';
import type { AlertChannelViewT } from '../domain/alert-channels.ts';
import type { ConnectionViewT } from '../domain/connections.ts';
import type { MappingViewT } from '../domain/mappings.ts';
import type { ModelViewT } from '../domain/models.ts';
import type { RunViewT } from '../domain/runs.ts';
import type { RunRecordViewT } from '../domain/runs.ts';
import type { WorkspaceViewT } from '../domain/api-keys.ts';
import type { Services } from '../domain/services.ts';
import type { PlannedChangeT, PlanT } from '../domain/declarative/bundle.ts';
import { isAppError, NotFoundError, UnauthorizedError, ValidationError } from '../errors.ts';
import { toGraphqlError } from './errors.ts';
import type { Resolvers } from './generated.ts';
import { createLoaders, type Loaders } from './loaders.ts';
import { runUpdates, type RunNotification, type RunUpdateEvent } from './run-updates.ts';
import { DateTimeScalar, JSONScalar, plain } from './scalars.ts';

// Resolvers: thin adapters from GraphQL arguments to the domain services, the same calls the REST
// routes make. Typed by the Resolvers type generated from the SDL (src/graphql/generated.ts):
// parents are the services' views, arguments and results are checked against the schema. Nested relations go through the per-request loaders (src/graphql/loaders.ts).

export interface GqlContext {
  actor: Actor | null;
  loaders?: Loaders;
  pubsub: { subscribe(topic: string): Promise<Readable> };
  /** Aborted when the HTTP client goes away (ends long-polls such as run(wait:)). */
  signal?: AbortSignal;
  /**
   * The request's origin (scheme://host), as REST's routes see it: the fallback for the OAuth
   * redirect URI. Set for HTTP requests, which are the only ones that run mutations.
   */
  origin?: string;
}

export type { RunNotification } from './run-updates.ts';

/** The Viewer's parent: the caller, and its workspace loaded on demand. */
export interface ViewerParent {
  keyId: string | null;
  scopes: Actor['scopes'];
  owner: boolean;
  workspace: () => Promise<WorkspaceViewT | undefined>;
}

export function runTopic(workspaceId: string, syncId: string): string {
  return `run:${workspaceId}:${syncId}`;
}

type Args = Record<string, any>;

/** REST's `secretFingerprints` map as GraphQL's list (sorted by name). */
function fingerprintList(m: Record<string, { fingerprint: string; updatedAt: string }>) {
  return Object.entries(m).map(([name, v]) => ({ name, ...v }));
}

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

/**
 * A service page as a Relay connection; every cursor is the REST API's cursor after that node
 * (`cursorOf` for lists not keyed by id). Pagination is forward only: hasPreviousPage says whether
 * the page was asked after a cursor.
 */
function connection<T>(p: Page<T>, opts: { orderBy?: OrderField | null; after?: string | null; cursorOf?: (node: T) => string } = {}) {
  const cursorOf =
    opts.cursorOf ??
    ((node: T) =>
      opts.orderBy && opts.orderBy !== 'createdAt'
        ? cursorAfter(node as unknown as Parameters<typeof cursorAfter>[0], opts.orderBy)
        : encodeCursor((node as unknown as { id: string }).id));
  const edges = p.data.map((node) => ({ cursor: cursorOf(node), node }));
  return {
    edges,
    nodes: p.data,
    pageInfo: {
      hasNextPage: p.nextCursor !== null,
      hasPreviousPage: Boolean(opts.after),
      startCursor: edges[0]?.cursor ?? null,
      endCursor: p.nextCursor ?? edges.at(-1)?.cursor ?? null,
    },
  };
}

/**
 * A small list held whole (the connector catalog, a sync's mappings) as a connection: all of it,
 * or `first` items after the `after` cursor.
 */
function listAsConnection<T>(items: T[], a: Args, cursorOf: (node: T) => string) {
  let start = 0;
  if (a.after) {
    start = items.findIndex((x) => cursorOf(x) === a.after) + 1;
    if (start === 0) throw new ValidationError('The after cursor is not one this API returned.', [{ path: '/after', message: 'is not a valid cursor' }], 'invalid_cursor');
  }
  if (a.first !== undefined && a.first !== null) pageLimit(a.first);
  const end = a.first ? start + a.first : items.length;
  const data = items.slice(start, end);
  return connection({ data, nextCursor: end < items.length && data.length ? cursorOf(data[data.length - 1]) : null }, { after: a.after, cursorOf });
}

/** Run records are keyed by (run, primary key, operation): a stable id for clients' caches. */
export function runRecordId(r: { runId: string; primaryKey: string; operation: string }): string {
  return `rec_${Buffer.from(`${r.runId}\u0000${r.operation}\u0000${r.primaryKey}`).toString('base64url')}`;
}

/**
 * A relation the schema declares non-null (its foreign key is NOT NULL): the loaded object, or a
 * not_found error if it vanished between the two reads (a concurrent delete).
 */
function must<T>(v: T | undefined | null, resource: string, id: string): T {
  if (v === undefined || v === null) throw new NotFoundError(resource, id);
  return v;
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

/**
 * A ScheduleInput (@oneOf: manual | interval | cron) → the REST API's schedule
 * ({ type: "interval", everySeconds } …).
 */
function scheduleBody(s: Record<string, any>): unknown {
  if (s.manual !== undefined && s.manual !== null) {
    if (s.manual !== true) throw new ValidationError('schedule.manual must be true (or choose interval or cron).', [{ path: '/schedule/manual', message: 'must be true' }], 'invalid_schedule');
    return { type: 'manual' };
  }
  if (s.interval) return { type: 'interval', ...(withoutNulls(s.interval) as object) };
  if (s.cron) return { type: 'cron', ...(withoutNulls(s.cron) as object) };
  return s;
}

/**
 * A MappingInput's lookup: its optional fields given as null are not set (REST omits them, and
 * its schema refuses null), so a lookup reads back the same through either API.
 */
function mappingBody(m: unknown): unknown {
  const src = (m as { source?: { lookup?: unknown } } | null)?.source;
  if (src?.lookup && typeof src.lookup === 'object') src.lookup = withoutNulls(src.lookup);
  return m;
}

/** GraphQL input → the REST body the services validate. */
/** A plan (or an apply's result) in GraphQL's terms: resourceId for id, secret always a boolean. */
function planOut(p: { planHash: string; prune: boolean; changes: (PlannedChangeT & { version?: number | null })[]; summary: PlanT['summary'] }) {
  return {
    ...p,
    changes: p.changes.map(({ id, fields, ...c }) => ({ ...c, resourceId: id, version: c.version ?? null, fields: fields.map((f) => ({ field: f.field, before: f.before ?? null, after: f.after ?? null, secret: f.secret ?? false })) })),
  };
}

function body(input: unknown): any {
  const b = plain(input) as Record<string, unknown>;
  if (Array.isArray(b)) return b.map(mappingBody); // setMappings' list
  if (b && typeof b === 'object') {
    if (b.schedule) b.schedule = scheduleBody(b.schedule as Record<string, any>);
    if (Array.isArray(b.mappings)) b.mappings = b.mappings.map(mappingBody);
    mappingBody(b);
  }
  return b;
}

/** createOnly: true is REST's If-None-Match: *. */
function putOptions(a: Args): { ifNoneMatch?: string } {
  return a.createOnly ? { ifNoneMatch: '*' } : {};
}

/** The connector catalog as GraphQL shows it (id: ctr_ + type). */
function connectorCatalog() {
  return listConnectorTypes().map((t) => ({
    id: `ctr_${t.type}`,
    type: t.type,
    label: t.label,
    roles: t.roles,
    configSchema: t.configSchema,
    secrets: t.secrets,
    capabilities: t.capabilities ?? null,
    oauth: t.oauth ? { provider: t.oauth.name, authorizeUrl: t.oauth.authorizeUrl, tokenUrl: t.oauth.tokenUrl, scopes: t.oauth.scopes } : null,
  }));
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
  seq: 'Sequence',
  seqrun: 'SequenceRun',
};

function prefixOf(id: string): string {
  const i = id.indexOf('_');
  return i > 0 ? id.slice(0, i) : '';
}

export function buildResolvers(services: Services): Resolvers {
  const loadersOf = (ctx: GqlContext): Loaders => (ctx.loaders ??= createLoaders(services, actorOf(ctx)));

  // By id prefix, any type of Node: typed loosely here, checked by resolveType.
  async function nodeById(ctx: GqlContext, id: string): Promise<any> {
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
      case 'seq':
        return orNull(services.sequences.get(actor, id));
      case 'seqrun':
        return orNull(services.sequences.getRun(actor, id));
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
    // Scalars are plain {serialize, parseValue, parseLiteral} objects: mercurius copies them onto the schema's types.
    JSON: JSONScalar as unknown as Resolvers['JSON'],
    DateTime: DateTimeScalar as unknown as Resolvers['DateTime'],

    Node: {
      resolveType: (obj: { id: string }) => (TYPE_BY_PREFIX[prefixOf(obj.id)] ?? null) as never,
    },
    Schedule: {
      resolveType: (s: { type: string }) => (({ manual: 'ManualSchedule', interval: 'IntervalSchedule', cron: 'CronSchedule' }) as const)[s.type as 'manual'] ?? null,
    },
    CronSchedule: {
      timezone: (s: { timezone?: string }) => s.timezone ?? 'UTC',
    },
    MappingSource: {
      resolveType: (s: Record<string, unknown>) =>
        'column' in s ? 'ColumnSource' : 'static' in s ? 'StaticSource' : 'template' in s ? 'TemplateSource' : 'lookup' in s ? 'LookupSource' : null,
    },

    Query: {
      exportBundle: (_, _a, ctx) => services.declarative.export(actorOf(ctx)),
      planBundle: async (_, a, ctx) => planOut(await services.declarative.plan(actorOf(ctx), a.bundle)),
      node: (_, a, ctx) => nodeById(ctx, a.id),
      nodes: (_, a, ctx) => {
        const ids = a.ids as string[];
        if (ids.length > 100) throw new ValidationError('nodes takes at most 100 ids.', [{ path: '/ids', message: 'must have at most 100 items' }]);
        return Promise.all(ids.map((id) => nodeById(ctx, id)));
      },
      viewer: (_, _a, ctx) => {
        const actor = actorOf(ctx);
        return { keyId: actor.keyId, scopes: actor.scopes, owner: actor.owner, workspace: () => loadersOf(ctx).workspace.load(actor.workspaceId) };
      },
      connectors: (_, _a, ctx) => {
        requireScope(actorOf(ctx), 'read');
        return connectorCatalog();
      },
      connectorConnection: (_, a, ctx) => {
        requireScope(actorOf(ctx), 'read');
        return listAsConnection(connectorCatalog(), a, (c) => encodeCursor(c.id));
      },
      connections: async (_, a, ctx) =>
        connection(await services.connections.list(actorOf(ctx), { ...listParams(a), type: a.type ?? undefined }), { orderBy: a.orderBy?.field, after: a.after }),
      connection: (_, a, ctx) => orNull(services.connections.get(actorOf(ctx), a.ref)),
      models: async (_, a, ctx) =>
        connection(await services.models.listStored(actorOf(ctx), { ...listParams(a), connectionId: a.connectionId ?? undefined }), { orderBy: a.orderBy?.field, after: a.after }),
      model: (_, a, ctx) => orNull(services.models.get(actorOf(ctx), a.ref)),
      syncs: async (_, a, ctx) =>
        connection(
          await services.syncs.listStored(actorOf(ctx), {
            ...listParams(a),
            modelId: a.modelId ?? undefined,
            destinationId: a.destinationId ?? undefined,
            enabled: a.enabled ?? undefined,
          }),
          { orderBy: a.orderBy?.field, after: a.after },
        ),
      sync: (_, a, ctx) => orNull(services.syncs.get(actorOf(ctx), a.ref)),
      run: (_, a, ctx) =>
        orNull(a.wait == null ? services.runs.get(actorOf(ctx), a.id) : services.runWaiter.wait(actorOf(ctx), a.id, a.wait, ctx.signal).then((w) => w.run)),
      apiKeys: async (_, a, ctx) => connection(await services.apiKeys.list(actorOf(ctx), pageParams(a)), { after: a.after }),
      auditEvents: async (_, a, ctx) =>
        connection(
          await listAuditEvents(services.deps.database.db, actorOf(ctx), {
            ...pageParams(a),
            resourceType: a.resourceType ?? undefined,
            resourceId: a.resourceId ?? undefined,
            since: a.since ?? undefined,
            until: a.until ?? undefined,
          }),
          { after: a.after },
        ),
      workspaces: async (_, a, ctx) => connection(await services.apiKeys.listWorkspaces(actorOf(ctx), pageParams(a)), { after: a.after }),
      webhookEndpoints: async (_, a, ctx) => connection(await services.webhooks.list(actorOf(ctx), pageParams(a)), { after: a.after }),
      webhookEndpoint: (_, a, ctx) => orNull(services.webhooks.get(actorOf(ctx), a.ref)),
      callbackSecret: (_, _a, ctx) => services.webhooks.callbackSecret(actorOf(ctx)),
      alertChannels: async (_, a, ctx) => connection(await services.alertChannels.list(actorOf(ctx), pageParams(a)), { after: a.after }),
      alertChannel: (_, a, ctx) => orNull(services.alertChannels.get(actorOf(ctx), a.ref)),
      sequences: async (_, a, ctx) =>
        connection(await services.sequences.list(actorOf(ctx), { ...listParams(a), enabled: a.enabled ?? undefined }), { orderBy: a.orderBy?.field, after: a.after }),
      sequence: (_, a, ctx) => orNull(services.sequences.get(actorOf(ctx), a.ref)),
      sequenceRun: (_, a, ctx) =>
        orNull(a.wait == null ? services.sequences.getRun(actorOf(ctx), a.id) : services.sequenceRunWaiter.wait(actorOf(ctx), a.id, a.wait, ctx.signal).then((w) => w.run)),
      alerts: async (_, a, ctx) =>
        connection(await services.alerts.list(actorOf(ctx), { ...pageParams(a), status: a.status ?? undefined, syncId: a.syncId ?? undefined }), { after: a.after }),
    },

    WebhookEndpoint: {
      deliveries: async (e, a, ctx) =>
        connection(await services.webhooks.deliveries(actorOf(ctx), e.id, { ...pageParams(a), status: a.status ?? undefined, eventType: a.eventType ?? undefined }), { after: a.after }),
    },

    WebhookDelivery: {
      endpoint: async (d, _a, ctx) => (d.endpointId ? ((await loadersOf(ctx).webhookEndpoint.load(d.endpointId)) ?? null) : null),
    },

    Alert: {
      sync: async (al, _a, ctx) => must(await loadersOf(ctx).sync.load(al.syncId), 'sync', al.syncId),
    },

    AlertChannel: {
      secretFingerprints: (c: AlertChannelViewT) => fingerprintList(c.secretFingerprints),
    },

    Viewer: {
      workspace: async (v: ViewerParent) => must(await v.workspace(), 'workspace', 'of this key'),
    },

    Connection: {
      secretFingerprints: (c: ConnectionViewT) => fingerprintList(c.secretFingerprints),
      destinationObjects: (c, _a, ctx) => services.connections.objects(actorOf(ctx), c.id),
      destinationFields: (c, a, ctx) => services.connections.fields(actorOf(ctx), c.id, a.object),
    },

    Model: {
      connection: async (m, _a, ctx) => must(await loadersOf(ctx).connection.load(m.connectionId), 'connection', m.connectionId),
      columns: (m, _a, ctx) => services.models.columns(actorOf(ctx), m.id),
      preview: (m, a, ctx) => services.models.preview(actorOf(ctx), m.id, { limit: a.limit ?? undefined, timeoutMs: a.timeoutMs ?? undefined }),
      syncs: async (m, a, ctx) => connection(await services.syncs.listStored(actorOf(ctx), { ...pageParams(a), modelId: m.id, enabled: a.enabled ?? undefined }), { after: a.after }),
    },

    Sync: {
      model: async (s, _a, ctx) => must(await loadersOf(ctx).model.load(s.modelId), 'model', s.modelId),
      destination: async (s, _a, ctx) => must(await loadersOf(ctx).connection.load(s.destinationId), 'connection', s.destinationId),
      mappings: async (s, _a, ctx) => (await loadersOf(ctx).mappingsBySync.load(s.id)) ?? [],
      lastRun: async (s, _a, ctx) => (await loadersOf(ctx).lastRunBySync.load(s.id)) ?? null,
      runs: async (s, a, ctx) => connection(await services.runs.listForSync(actorOf(ctx), s.id, { ...pageParams(a), status: a.status ?? undefined }), { after: a.after }),
      recordHistory: async (s, a, ctx) =>
        connection(await services.runs.history(actorOf(ctx), s.id, a.primaryKey, pageParams(a)), {
          after: a.after,
          cursorOf: (r) => encodeCursor(`${r.runId}\u0000${r.operation}`),
        }),
      mappingConnection: async (s, a, ctx) =>
        listAsConnection((await loadersOf(ctx).mappingsBySync.load(s.id)) ?? [], a, (m) => encodeCursor(m.id)),
    },

    Sequence: {
      runs: async (q, a, ctx) => connection(await services.sequences.listRuns(actorOf(ctx), q.id, { ...pageParams(a), status: a.status ?? undefined }), { after: a.after }),
    },

    SequenceStep: {
      sync: async (st, _a, ctx) => must(await loadersOf(ctx).sync.load(st.syncId), 'sync', st.syncId),
    },

    SequenceRun: {
      sequence: async (r, _a, ctx) => services.sequences.get(actorOf(ctx), r.sequenceId),
    },

    SequenceRunStep: {
      sync: async (st, _a, ctx) => (await loadersOf(ctx).sync.load(st.syncId)) ?? null,
      run: (st, _a, ctx) => (st.runId ? orNull(services.runs.get(actorOf(ctx), st.runId)) : null),
    },

    Mapping: {
      sync: async (m, _a, ctx) => must(await loadersOf(ctx).sync.load(m.syncId), 'sync', m.syncId),
    },

    Run: {
      sync: async (r, _a, ctx) => must(await loadersOf(ctx).sync.load(r.syncId), 'sync', r.syncId),
      records: async (r, a, ctx) => {
        const p = await services.runs.records(actorOf(ctx), r.id, {
          ...pageParams(a),
          status: a.status ?? undefined,
          operation: a.operation ?? undefined,
          primaryKey: a.primaryKey ?? undefined,
          redelivered: a.redelivered ?? undefined,
        });
        return connection(p, { after: a.after, cursorOf: (rec) => encodeCursor(`${rec.primaryKey}\u0000${rec.operation}`) });
      },
      deliveries: async (r, a, ctx) => connection(await services.webhooks.runDeliveries(actorOf(ctx), r.id, pageParams(a)), { after: a.after }),
    },

    RunRecord: {
      id: (r: RunRecordViewT) => runRecordId(r),
    },

    Connector: {
      id: (c: { type: string }) => `ctr_${c.type}`,
    },

    RunUpdate: {
      id: (u: RunNotification) => `upd_${u.runId}_${u.status}_${u.phase ?? 'none'}`,
      run: (u: RunNotification & { run?: RunViewT | null }, _a: unknown, ctx: GqlContext) => (u.run !== undefined ? u.run : orNull(services.runs.get(actorOf(ctx), u.runId))),
    },

    Mutation: {
      createConnection: (_, a, ctx) => services.connections.create(actorOf(ctx), body(a.input)),
      updateConnection: (_, a, ctx) => services.connections.update(actorOf(ctx), a.ref, body(a.input), ifMatch(a.expectedVersion)),
      replaceConnection: (_, a, ctx) => services.connections.put(actorOf(ctx), a.ref, body(a.input), ifMatch(a.expectedVersion), putOptions(a)),
      deleteConnection: (_, a, ctx) =>
        deleted(
          () => services.connections.get(actorOf(ctx), a.ref),
          (id) => services.connections.delete(actorOf(ctx), id, ifMatch(a.expectedVersion)),
        ),
      testConnection: (_, a, ctx) => services.connections.test(actorOf(ctx), a.ref),
      startConnectionOAuth: (_, a, ctx) => {
        if (ctx.origin === undefined) throw new Error('startConnectionOAuth needs the HTTP request (its origin)');
        return services.oauth.start(actorOf(ctx), a.ref, body(a.input ?? {}), ctx.origin);
      },

      createModel: (_, a, ctx) => services.models.create(actorOf(ctx), body(a.input), { validate: a.validate !== false }),
      updateModel: (_, a, ctx) => services.models.update(actorOf(ctx), a.ref, body(a.input), ifMatch(a.expectedVersion), { validate: a.validate !== false }),
      replaceModel: (_, a, ctx) => services.models.put(actorOf(ctx), a.ref, body(a.input), ifMatch(a.expectedVersion), { validate: a.validate !== false, ...putOptions(a) }),
      deleteModel: (_, a, ctx) =>
        deleted(
          () => services.models.get(actorOf(ctx), a.ref),
          (id) => services.models.delete(actorOf(ctx), id, ifMatch(a.expectedVersion)),
        ),

      createSync: (_, a, ctx) => services.syncs.create(actorOf(ctx), body(a.input)),
      updateSync: (_, a, ctx) => services.syncs.update(actorOf(ctx), a.ref, body(a.input), ifMatch(a.expectedVersion)),
      replaceSync: (_, a, ctx) => services.syncs.put(actorOf(ctx), a.ref, body(a.input), ifMatch(a.expectedVersion), putOptions(a)),
      deleteSync: (_, a, ctx) =>
        deleted(
          () => services.syncs.get(actorOf(ctx), a.ref),
          (id) => services.syncs.delete(actorOf(ctx), id, ifMatch(a.expectedVersion)),
        ),

      createMapping: (_, a, ctx) => services.mappings.create(actorOf(ctx), a.syncRef, body(a.input)),
      updateMapping: (_, a, ctx) => services.mappings.update(actorOf(ctx), a.syncRef, a.id, body(a.input), ifMatch(a.expectedVersion)),
      replaceMapping: (_, a, ctx) => services.mappings.update(actorOf(ctx), a.syncRef, a.id, body(a.input), ifMatch(a.expectedVersion), true),
      deleteMapping: async (_, a, ctx) => {
        await services.mappings.delete(actorOf(ctx), a.syncRef, a.id, ifMatch(a.expectedVersion));
        return { deletedId: a.id };
      },
      applyBundle: async (_, a, ctx) => {
        const r = await services.declarative.apply(actorOf(ctx), a.bundle, a.planHash ?? undefined);
        return planOut({ planHash: r.planHash, prune: false, changes: r.applied, summary: r.summary });
      },
      setMappings: async (_, a, ctx) => (await services.mappings.replaceAll(actorOf(ctx), a.syncRef, body(a.mappings), ifMatch(a.expectedSyncVersion))).data,

      createApiKey: async (_, a, ctx) => {
        const created = await services.apiKeys.create(actorOf(ctx), body(a.input));
        return { apiKey: created, token: created.token };
      },
      revokeApiKey: async (_, a, ctx) => {
        await services.apiKeys.revoke(actorOf(ctx), a.id);
        return { deletedId: a.id };
      },
      createWorkspace: async (_, a, ctx) => {
        const r = await services.apiKeys.createWorkspace(actorOf(ctx), body(a.input));
        return { workspace: r.workspace, apiKey: r.apiKey, token: r.apiKey.token };
      },

      createSequence: (_, a, ctx) => services.sequences.create(actorOf(ctx), body(a.input)),
      updateSequence: (_, a, ctx) => services.sequences.update(actorOf(ctx), a.ref, body(a.input), ifMatch(a.expectedVersion)),
      replaceSequence: async (_, a, ctx) => {
        const r = await services.sequences.put(actorOf(ctx), a.ref, body(a.input), ifMatch(a.expectedVersion), putOptions(a));
        return { created: r.created, sequence: r.value };
      },
      deleteSequence: (_, a, ctx) =>
        deleted(
          () => services.sequences.get(actorOf(ctx), a.ref),
          (id) => services.sequences.delete(actorOf(ctx), id, ifMatch(a.expectedVersion)),
        ),
      triggerSequenceRun: async (_, a, ctx) => {
        const r = await services.sequences.trigger(actorOf(ctx), a.sequenceRef, 'api');
        return { sequenceRun: r.run, created: r.created };
      },
      cancelSequenceRun: (_, a, ctx) => services.sequences.cancelRun(actorOf(ctx), a.id),

      triggerRun: (_, a, ctx) =>
        services.runs.trigger(actorOf(ctx), a.syncRef, body({ fullResync: a.fullResync ?? undefined, dryRun: a.dryRun ?? undefined, allowDeletions: a.allowDeletions ?? undefined, callbackUrl: a.callbackUrl ?? undefined })),
      cancelRun: (_, a, ctx) => services.runs.cancel(actorOf(ctx), a.id),
      suggestMappings: async (_, a, ctx) => {
        const r = await services.mappings.suggest(actorOf(ctx), a.syncRef, { apply: a.apply ?? false, minConfidence: a.minConfidence ?? undefined });
        return { suggestions: r.data.map((d) => ({ ...d, sourceColumn: d.source.column })), applied: r.applied };
      },

      // Webhook endpoints: the secret is only ever in these payloads (as REST shows it only in
      // the answers to a create or a rotation); the WebhookEndpoint type has no secret field.
      createWebhookEndpoint: async (_, a, ctx) => {
        const created = await services.webhooks.create(actorOf(ctx), body(a.input));
        return { webhookEndpoint: created, secret: must(created.secret, 'webhook secret', created.id) };
      },
      updateWebhookEndpoint: (_, a, ctx) => services.webhooks.update(actorOf(ctx), a.ref, body(a.input), ifMatch(a.expectedVersion)),
      replaceWebhookEndpoint: async (_, a, ctx) => {
        const r = await services.webhooks.put(actorOf(ctx), a.ref, body(a.input), ifMatch(a.expectedVersion), putOptions(a));
        return { created: r.created, webhookEndpoint: r.value, secret: r.value.secret ?? null };
      },
      deleteWebhookEndpoint: (_, a, ctx) =>
        deleted(
          () => services.webhooks.get(actorOf(ctx), a.ref),
          (id) => services.webhooks.delete(actorOf(ctx), id, ifMatch(a.expectedVersion)),
        ),
      rotateWebhookSecret: async (_, a, ctx) => {
        const r = await services.webhooks.rotateSecret(actorOf(ctx), a.ref, body(a.input ?? {}));
        return { webhookEndpoint: r, secret: must(r.secret, 'webhook secret', r.id) };
      },
      redeliverWebhook: (_, a, ctx) => services.webhooks.redeliver(actorOf(ctx), a.endpointRef, a.id),
      rotateCallbackSecret: async (_, a, ctx) => {
        const { secret, ...callbackSecret } = await services.webhooks.rotateCallbackSecret(actorOf(ctx), body(a.input ?? {}));
        return { callbackSecret, secret: must(secret, 'callback secret', 'of this workspace') };
      },

      createAlertChannel: (_, a, ctx) => services.alertChannels.create(actorOf(ctx), body(a.input)),
      updateAlertChannel: (_, a, ctx) => services.alertChannels.update(actorOf(ctx), a.ref, body(a.input), ifMatch(a.expectedVersion)),
      replaceAlertChannel: async (_, a, ctx) => {
        const r = await services.alertChannels.put(actorOf(ctx), a.ref, body(a.input), ifMatch(a.expectedVersion), putOptions(a));
        return { created: r.created, alertChannel: r.value };
      },
      deleteAlertChannel: (_, a, ctx) =>
        deleted(
          () => services.alertChannels.get(actorOf(ctx), a.ref),
          (id) => services.alertChannels.delete(actorOf(ctx), id, ifMatch(a.expectedVersion)),
        ),
      testAlertChannel: (_, a, ctx) => services.alertChannels.test(actorOf(ctx), a.ref),
    },

    Subscription: {
      runUpdated: {
        // Resolves the sync (id or slug) in the caller's workspace, then listens on a topic that
        // names both: notifications of other workspaces never reach this subscriber.
        subscribe: async (_, a, ctx) => {
          try {
            const actor = actorOf(ctx);
            const sync = await services.syncs.get(actor, a.syncId);
            const queue = await ctx.pubsub.subscribe(runTopic(actor.workspaceId, sync.id));
            return runUpdates(queue, (runId) => orNull(services.runs.get(actor, runId)));
          } catch (e) {
            throw toGraphqlError(e);
          }
        },
        resolve: (payload: RunUpdateEvent, _a: Args, ctx: GqlContext) => {
          // One context serves every event of a subscription: start each from fresh data.
          ctx.loaders?.clear();
          return payload;
        },
      },
    },
  };
}
