import { Type, type Static } from '@sinclair/typebox';
import { CronExpressionParser } from 'cron-parser';
import { and, eq, getTableColumns, sql } from 'drizzle-orm';
import { connections, models, syncSnapshots, syncs } from '../db/schema.ts';
import type { Tx } from '../db/client.ts';
import { getConnectorType } from '../connectors/registry.ts';
import { NotFoundError, UnprocessableError, ValidationError } from '../errors.ts';
import { newId } from '../lib/ids.ts';
import { assertValid } from '../lib/validate.ts';
import { recordAudit } from './audit.ts';
import type { Actor } from './context.ts';
import { changedFields, checkVersion, isUniqueViolation, iso, requireScope, slugTaken, type Page } from './common.ts';
import { inUse, Name, Slug, type ConnectionService } from './connections.ts';
import type { SequenceService } from './sequences.ts';
import type { ServiceDeps } from './deps.ts';
import { checkRefSlugs, getByRef, getReferenced, idOfRef, prepareSelect, putBySlug, slugsOf, type Prepared, type PutOptions } from './refs.ts';
import { acceptingReadOnly, readOnlyFields } from './read-only.ts';
import { ReadCache } from './read-cache.ts';
import { listOrdered, type ListOptions } from './list.ts';
import { withoutDefaults } from './defaults.ts';
import { MappingItem, type MappingService } from './mappings.ts';

// Syncs: model → destination object, with a mode, a match key, a schedule and delivery settings.

export const SYNC_MODES = ['insert', 'update', 'upsert', 'mirror'] as const;
export type SyncModeT = (typeof SYNC_MODES)[number];

/** What the server fills in for optional groups a create (or a PUT) leaves out; declared as `default`s below. */
export const DEFAULT_DELIVERY = { batchSize: 500, concurrency: 4, maxRequestsPerSecond: null as number | null, maxRetries: 6 };
export const DEFAULT_ALERTS = {
  channelIds: [] as string[],
  onFailure: true,
  rowFailurePercent: null as number | null,
  maxDurationSeconds: null as number | null,
  consecutiveFailures: null as number | null,
};
export const DEFAULT_SCHEDULE = { type: 'manual' as const };

/** A schedule (syncs and sequences): manual, interval or cron. */
export const Schedule = Type.Union(
  [
    Type.Object({ type: Type.Literal('manual') }, { additionalProperties: false }),
    Type.Object(
      {
        type: Type.Literal('interval'),
        everySeconds: Type.Integer({ minimum: 10, maximum: 31_536_000 }),
        anchor: Type.Optional(
          Type.String({
            format: 'date-time',
            description:
              'A time on the grid of slots (anchor + k × everySeconds, k any integer: it sets the phase, not a start). Default: the sync\'s creation. A late run never shifts the following slots.',
          }),
        ),
      },
      { additionalProperties: false },
    ),
    Type.Object(
      {
        type: Type.Literal('cron'),
        expression: Type.String({ minLength: 1, maxLength: 200, description: 'Five-field cron expression, e.g. "0 6 * * 1-5"' }),
        timezone: Type.Optional(Type.String({ minLength: 1, maxLength: 100, default: 'UTC', description: 'IANA time zone, e.g. Europe/Paris' })),
      },
      { additionalProperties: false },
    ),
  ],
  { default: DEFAULT_SCHEDULE, description: 'manual (run on trigger only), interval (every N seconds, on an anchored grid) or cron' },
);
const D = DEFAULT_DELIVERY;
const Delivery = Type.Object(
  {
    batchSize: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000, default: D.batchSize, description: 'Rows per batch (capped by the destination\'s own limit)' })),
    concurrency: Type.Optional(Type.Integer({ minimum: 1, maximum: 32, default: D.concurrency, description: 'Batches in flight at once' })),
    maxRequestsPerSecond: Type.Optional(
      Type.Union([Type.Number({ exclusiveMinimum: 0, maximum: 10_000 }), Type.Null()], { default: D.maxRequestsPerSecond, description: 'Rate limit towards the destination; null: none' }),
    ),
    maxRetries: Type.Optional(Type.Integer({ minimum: 0, maximum: 20, default: D.maxRetries, description: 'Retries of a retryable failure (429, 5xx, network) within a run' })),
  },
  { additionalProperties: false, default: DEFAULT_DELIVERY },
);
const A = DEFAULT_ALERTS;
const Alerts = Type.Object(
  {
    channelIds: Type.Optional(
      Type.Array(Type.String({ minLength: 1, maxLength: 100 }), { maxItems: 20, uniqueItems: true, default: A.channelIds, description: 'Alert channels (ids or slugs)' }),
    ),
    onFailure: Type.Optional(Type.Boolean({ default: A.onFailure, description: 'Alert when a run fails' })),
    rowFailurePercent: Type.Optional(
      Type.Union([Type.Number({ minimum: 0, maximum: 100 }), Type.Null()], { default: A.rowFailurePercent, description: 'Alert when more rows than this percentage are rejected or invalid; null: never' }),
    ),
    maxDurationSeconds: Type.Optional(Type.Union([Type.Integer({ minimum: 1 }), Type.Null()], { default: A.maxDurationSeconds, description: 'Alert when a run takes longer; null: never' })),
    consecutiveFailures: Type.Optional(
      Type.Union([Type.Integer({ minimum: 1, maximum: 1000 }), Type.Null()], { default: A.consecutiveFailures, description: 'Alert after this many failed runs in a row; null: never' }),
    ),
  },
  { additionalProperties: false, default: DEFAULT_ALERTS },
);
const ChangeThresholds = Type.Object(
  {
    maxDeletes: Type.Optional(Type.Union([Type.Integer({ minimum: 0 }), Type.Null()], { description: 'Fail a run that plans more deletes than this (null: no limit)' })),
    maxDeletePercent: Type.Optional(
      Type.Union([Type.Number({ minimum: 0, maximum: 100 }), Type.Null()], { description: 'Fail a run whose deletes exceed this percentage of the records the sync wrote (null: no limit)' }),
    ),
    maxChanges: Type.Optional(Type.Union([Type.Integer({ minimum: 0 }), Type.Null()], { description: 'Fail a run that plans more inserts + updates + deletes than this (null: no limit)' })),
    maxChangePercent: Type.Optional(
      Type.Union([Type.Number({ minimum: 0 }), Type.Null()], { description: 'Fail a run whose changes exceed this percentage of the records the sync wrote (null: no limit)' }),
    ),
    allowEmptyModel: Type.Optional(Type.Boolean({ description: 'Let a model that returns 0 rows delete every record the sync wrote (mirror); default false' })),
  },
  { additionalProperties: false },
);
const MatchKey = Type.Object(
  { sourceColumn: Type.String({ minLength: 1, maxLength: 200 }), destinationField: Type.String({ minLength: 1, maxLength: 200 }) },
  { additionalProperties: false },
);
const Ref = (what: string) => Type.String({ minLength: 1, maxLength: 100, description: `Id or slug of ${what}` });
const Mode = Type.Union(SYNC_MODES.map((m) => Type.Literal(m)));

const syncFields = {
  name: Name,
  modelId: Ref('a model'),
  destinationId: Ref('a connection with the destination role'),
  object: Type.String({ minLength: 1, maxLength: 200 }),
  mode: Mode,
  matchKey: MatchKey,
  schedule: Type.Optional(Schedule),
  enabled: Type.Optional(Type.Boolean({ default: true, description: 'A disabled sync is not scheduled and cannot be triggered' })),
  delivery: Type.Optional(Delivery),
  alerts: Type.Optional(Alerts),
  changeThresholds: Type.Optional(ChangeThresholds),
  mappings: Type.Optional(
    Type.Array(MappingItem, {
      maxItems: 1000,
      description:
        "The whole set of the sync's mappings, written in the same transaction as the sync (one apply, one atomic write). Absent: the mappings are left as they are. Read them at /v1/syncs/{ref}/mappings.",
    }),
  ),
};

export const SyncCreate = Type.Object({ slug: Slug, ...syncFields }, { additionalProperties: false, $id: 'SyncCreate' });
const SyncPutBase = Type.Object({ slug: Type.Optional(Slug), ...syncFields }, { additionalProperties: false });
export const SyncPatch = withoutDefaults(
  Type.Partial(Type.Object({ slug: Slug, ...syncFields }), {
    additionalProperties: false,
    $id: 'SyncPatch',
    description: 'Only the fields sent change; delivery and alerts merge field by field over the current ones.',
  }),
);

export const SyncView = Type.Object(
  {
    id: Type.String(),
    slug: Type.String(),
    name: Type.String(),
    modelId: Type.String(),
    modelSlug: Type.String({ description: "The model's slug (follows a rename of the model)" }),
    destinationId: Type.String(),
    destinationSlug: Type.String({ description: "The destination connection's slug (follows a rename)" }),
    object: Type.String(),
    mode: Mode,
    matchKey: MatchKey,
    schedule: Schedule,
    enabled: Type.Boolean(),
    delivery: Type.Object({
      batchSize: Type.Integer(),
      concurrency: Type.Integer(),
      maxRequestsPerSecond: Type.Union([Type.Number(), Type.Null()]),
      maxRetries: Type.Integer(),
    }),
    alerts: Type.Object({
      channelIds: Type.Array(Type.String()),
      onFailure: Type.Boolean(),
      rowFailurePercent: Type.Union([Type.Number(), Type.Null()]),
      maxDurationSeconds: Type.Union([Type.Integer(), Type.Null()]),
      consecutiveFailures: Type.Union([Type.Integer(), Type.Null()]),
    }),
    changeThresholds: Type.Object({
      maxDeletes: Type.Union([Type.Integer(), Type.Null()]),
      maxDeletePercent: Type.Union([Type.Number(), Type.Null()]),
      maxChanges: Type.Union([Type.Integer(), Type.Null()]),
      maxChangePercent: Type.Union([Type.Number(), Type.Null()]),
      allowEmptyModel: Type.Boolean(),
    }),
    snapshotResetAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()], {
      description: 'When the sync last started a new snapshot (its destination, object, match key or mode changed): the next run writes every row again',
    }),
    createdAt: Type.String({ format: 'date-time' }),
    updatedAt: Type.String({ format: 'date-time' }),
    version: Type.Integer(),
  },
  { $id: 'Sync' },
);

export type SyncCreateInput = Static<typeof SyncCreate>;
export const SyncPut = acceptingReadOnly(SyncPutBase, SyncView, { $id: 'SyncPut' });
export type SyncPutInput = Static<typeof SyncPutBase> & RefSlugs;
export type SyncPatchInput = Partial<SyncCreateInput>;
/** A sync as stored (what the engine and GraphQL use); the API adds the references' slugs. */
export type SyncViewT = Omit<Static<typeof SyncView>, keyof RefSlugs>;
/** The slugs shown beside a sync's references (read-only; see withSlugs). */
export interface RefSlugs {
  modelSlug: string;
  destinationSlug: string;
}
/** A sync as the API shows it. */
export type SyncOutT = SyncViewT & RefSlugs;
export type ScheduleT = Static<typeof Schedule>;
export type DeliveryT = SyncViewT['delivery'];
export type AlertsT = SyncViewT['alerts'];
export type ChangeThresholdsT = SyncViewT['changeThresholds'];
type Row = typeof syncs.$inferSelect;

export const DEFAULT_THRESHOLDS: ChangeThresholdsT = { maxDeletes: null, maxDeletePercent: null, maxChanges: null, maxChangePercent: null, allowEmptyModel: false };
/** Fields whose change makes the snapshot describe another place: a new snapshot starts. */
export const SNAPSHOT_FIELDS = ['destinationId', 'object', 'matchKey', 'mode'] as const;

export function syncView(r: Row): SyncViewT {
  return {
    id: r.id,
    slug: r.slug,
    name: r.name,
    modelId: r.modelId,
    destinationId: r.destinationId,
    object: r.object,
    mode: r.mode as SyncModeT,
    matchKey: r.matchKey as SyncViewT['matchKey'],
    schedule: r.schedule as ScheduleT,
    enabled: r.enabled,
    delivery: { ...DEFAULT_DELIVERY, ...(r.delivery as object) },
    alerts: { ...DEFAULT_ALERTS, ...(r.alerts as object) },
    changeThresholds: { ...DEFAULT_THRESHOLDS, ...(r.changeThresholds as object) },
    snapshotResetAt: iso(r.snapshotResetAt),
    createdAt: iso(r.createdAt)!,
    updatedAt: iso(r.updatedAt)!,
    version: r.version,
  };
}

/** Modes an object allows from the write operations it declares (same rule as the HTTP destination's capabilities). */
function modesOf(ops: Set<string>): SyncModeT[] {
  return SYNC_MODES.filter((m) => (m === 'mirror' ? ops.has('upsert') && ops.has('delete') : ops.has(m)));
}

/** Checks a schedule and returns its stored form (an anchor as an ISO UTC timestamp; a cron's zone made explicit). */
export function validateSchedule(s: ScheduleT): ScheduleT {
  if (s.type === 'interval') {
    if (s.anchor === undefined) return s;
    // The date-time format (RFC 3339) requires the offset, so the instant is never ambiguous.
    const at = Date.parse(s.anchor);
    if (!Number.isFinite(at) || !/(z|[+-]\d\d:?\d\d)$/i.test(s.anchor)) {
      throw new ValidationError('schedule.anchor must be an ISO 8601 timestamp with an offset, e.g. 2026-01-01T06:00:00Z.', [{ path: '/schedule/anchor', message: 'must be a timestamp with an offset' }], 'invalid_schedule');
    }
    return { type: 'interval', everySeconds: s.everySeconds, anchor: new Date(at).toISOString() };
  }
  if (s.type !== 'cron') return s;
  const timezone = s.timezone ?? 'UTC';
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: timezone });
  } catch {
    throw new ValidationError(`"${timezone}" is not an IANA time zone.`, [{ path: '/schedule/timezone', message: 'is not an IANA time zone (e.g. Europe/Paris)' }], 'invalid_schedule');
  }
  if (s.expression.trim().split(/\s+/).length !== 5) {
    throw new ValidationError('A cron expression has five fields: minute hour day-of-month month day-of-week.', [{ path: '/schedule/expression', message: 'must have five fields' }], 'invalid_schedule');
  }
  try {
    CronExpressionParser.parse(s.expression, { tz: timezone });
  } catch (e) {
    throw new ValidationError(`Invalid cron expression: ${(e as Error).message}`, [{ path: '/schedule/expression', message: (e as Error).message }], 'invalid_schedule');
  }
  return { type: 'cron', expression: s.expression.trim(), timezone };
}

export class SyncService {
  private readonly deps: ServiceDeps;
  private readonly connections: ConnectionService;
  /** Set by createServices (the mapping service is built after this one). */
  mappings!: MappingService;
  /** Set by createServices: the sequences a sync is a step of (it cannot be deleted then). */
  sequences!: SequenceService;
  constructor(deps: ServiceDeps, connections: ConnectionService) {
    this.deps = deps;
    this.connections = connections;
  }

  private get db() {
    return this.deps.database.db;
  }

  /**
   * Answers of get and list, per workspace (see ReadCache: emptied by every write, on this
   * instance before the write's answer, on the others by NOTIFY). Shared: never mutate them.
   */
  readonly reads = new ReadCache<SyncOutT | Page<SyncOutT>>();

  /** Filters take ids or slugs (an unknown one matches nothing). */
  async list(actor: Actor, params: ListOptions & { modelId?: string; destinationId?: string; enabled?: boolean } = {}): Promise<Page<SyncOutT>> {
    requireScope(actor, 'read');
    const key = `${actor.workspaceId}\0list\0${JSON.stringify(params)}`;
    const hit = this.reads.get(key);
    if (hit) return hit as Page<SyncOutT>;
    const generation = this.reads.mark();
    const page = (await this.listStored(actor, params, true)) as Page<SyncOutT>;
    this.reads.set(key, page, generation);
    return page;
  }

  /** list; with `slugs`, each sync with its references' slugs (joined in the same statement). */
  async listStored(actor: Actor, params: ListOptions & { modelId?: string; destinationId?: string; enabled?: boolean } = {}, slugs = false): Promise<Page<SyncViewT>> {
    requireScope(actor, 'read');
    const modelId = params.modelId ? await idOfRef(this.db, models, actor.workspaceId, params.modelId) : undefined;
    const destinationId = params.destinationId ? await idOfRef(this.db, connections, actor.workspaceId, params.destinationId) : undefined;
    if (modelId === null || destinationId === null) return { data: [], nextCursor: null };
    const filters = [
      modelId ? eq(syncs.modelId, modelId) : undefined,
      destinationId ? eq(syncs.destinationId, destinationId) : undefined,
      params.enabled !== undefined ? eq(syncs.enabled, params.enabled) : undefined,
    ];
    if (!slugs) return listOrdered(this.db, syncs, actor.workspaceId, filters, params, syncView);
    const joined = {
      columns: { modelSlug: models.slug, destinationSlug: connections.slug },
      join: (q: any) => q.innerJoin(models, eq(models.id, syncs.modelId)).innerJoin(connections, eq(connections.id, syncs.destinationId)),
    };
    return listOrdered(this.db, syncs, actor.workspaceId, filters, params, (r) => ({ ...syncView(r), modelSlug: (r as Row & RefSlugs).modelSlug, destinationSlug: (r as Row & RefSlugs).destinationSlug }), joined);
  }

  async get(actor: Actor, ref: string): Promise<SyncOutT> {
    requireScope(actor, 'read');
    const key = `${actor.workspaceId}\0one\0${ref}`;
    const hit = this.reads.get(key);
    if (hit) return hit as SyncOutT;
    const generation = this.reads.mark();
    // One statement: the sync and its references' slugs (a GET is the hottest read of the API).
    const rows = await this.getStatement(ref.includes('_')).execute({ workspaceId: actor.workspaceId, ref });
    const row = rows[0] as (Row & RefSlugs) | undefined;
    if (!row) throw new NotFoundError('sync', ref);
    const out = { ...syncView(row), modelSlug: row.modelSlug, destinationSlug: row.destinationSlug };
    this.reads.set(key, out, generation);
    return out;
  }

  private readonly getStatements: Prepared[] = [];
  private getStatement(byId: boolean): Prepared {
    const i = byId ? 1 : 0;
    if (!this.getStatements[i]) {
      const q = this.db
        .select({ ...getTableColumns(syncs), modelSlug: models.slug, destinationSlug: connections.slug })
        .from(syncs)
        .innerJoin(models, eq(models.id, syncs.modelId))
        .innerJoin(connections, eq(connections.id, syncs.destinationId))
        .where(and(eq(syncs.workspaceId, sql.placeholder('workspaceId')), eq(byId ? syncs.id : syncs.slug, sql.placeholder('ref'))))
        .limit(1);
      this.getStatements[i] = prepareSelect(this.db, syncs, q, `sync_get_${byId ? 'id' : 'slug'}`, ['modelSlug', 'destinationSlug']);
    }
    return this.getStatements[i];
  }

  /** Adds the slugs of the syncs' models and destinations, in one query. */
  async withSlugs(tx: Tx, workspaceId: string, views: SyncViewT[]): Promise<SyncOutT[]> {
    if (!views.length) return [];
    const slugs = await slugsOf(tx, workspaceId, [
      [models, views.map((v) => v.modelId)],
      [connections, views.map((v) => v.destinationId)],
    ]);
    return views.map((v) => ({ ...v, modelSlug: slugs.get(v.modelId) ?? '', destinationSlug: slugs.get(v.destinationId) ?? '' }));
  }

  async row(tx: Tx, workspaceId: string, ref: string, opts: { forUpdate?: boolean } = {}): Promise<Row> {
    return getByRef(tx, syncs, 'sync', workspaceId, ref, opts);
  }

  /** Resolves references and checks the sync against its destination's capabilities. */
  private async normalise(tx: Tx, actor: Actor, input: SyncCreateInput & Partial<RefSlugs>, current?: Row) {
    const model = await getReferenced(tx, models, 'model', actor.workspaceId, input.modelId, '/modelId');
    const dest = await getReferenced(tx, connections, 'connection', actor.workspaceId, input.destinationId, '/destinationId');
    checkRefSlugs([
      ['modelSlug', input.modelSlug, model.slug],
      ['destinationSlug', input.destinationSlug, dest.slug],
    ]);
    this.connections.requireRole(dest, 'destination', '/destinationId');
    const caps = getConnectorType(dest.type)?.capabilities;
    if (caps && !caps.modes.includes(input.mode)) {
      throw new UnprocessableError('unsupported_mode', `Destination type ${dest.type} does not support mode "${input.mode}" (it supports: ${caps.modes.join(', ')}).`, {
        errors: [{ path: '/mode', message: `must be one of: ${caps.modes.join(', ')}` }],
      });
    }
    const objects = (dest.config as { objects?: { name: string; operations?: Record<string, unknown> }[] }).objects;
    if (Array.isArray(objects) && !objects.some((o) => o.name === input.object)) {
      throw new UnprocessableError('unknown_object', `Destination "${dest.slug}" has no object "${input.object}" (it has: ${objects.map((o) => o.name).join(', ')}).`, {
        errors: [{ path: '/object', message: 'is not an object of the destination' }],
      });
    }
    // Objects that declare their operations (HTTP destinations) support only the modes those allow.
    const ops = Array.isArray(objects) ? objects.find((o) => o.name === input.object)?.operations : undefined;
    if (ops && typeof ops === 'object') {
      const modes = modesOf(new Set(Object.keys(ops)));
      if (!modes.includes(input.mode)) {
        throw new UnprocessableError('unsupported_mode', `Object "${input.object}" of destination "${dest.slug}" does not support mode "${input.mode}" (it supports: ${modes.join(', ') || 'none'}).`, {
          errors: [{ path: '/mode', message: `must be one of: ${modes.join(', ')}` }],
          hint: 'Add the operations this mode needs to the object in the connection\'s config (mirror needs upsert and delete), or choose another mode.',
        });
      }
    }
    const prevDelivery = current ? (current.delivery as DeliveryT) : DEFAULT_DELIVERY;
    const prevAlerts = current ? (current.alerts as AlertsT) : DEFAULT_ALERTS;
    const prevThresholds = current ? (current.changeThresholds as ChangeThresholdsT) : DEFAULT_THRESHOLDS;
    return {
      slug: input.slug,
      name: input.name,
      modelId: model.id,
      destinationId: dest.id,
      object: input.object,
      mode: input.mode,
      matchKey: input.matchKey,
      schedule: validateSchedule(input.schedule ?? (current?.schedule as ScheduleT) ?? { type: 'manual' }),
      enabled: input.enabled ?? current?.enabled ?? true,
      delivery: { ...DEFAULT_DELIVERY, ...prevDelivery, ...input.delivery },
      alerts: { ...DEFAULT_ALERTS, ...prevAlerts, ...input.alerts },
      changeThresholds: { ...DEFAULT_THRESHOLDS, ...prevThresholds, ...input.changeThresholds },
    };
  }

  async create(actor: Actor, input: SyncCreateInput, tx: Tx = this.db): Promise<SyncOutT> {
    requireScope(actor, 'write');
    assertValid(SyncCreate, input);
    if (input.mappings) this.mappings.checkSet(input.mappings, '/mappings');
    const id = newId('sync');
    try {
      const row = await tx.transaction(async (tx2) => {
        const values = await this.normalise(tx2, actor, input);
        const [r] = await tx2.insert(syncs).values({ id, workspaceId: actor.workspaceId, ...values }).returning();
        await recordAudit(tx2, actor, 'create', 'sync', id, [...Object.keys(values), ...(input.mappings ? ['mappings'] : [])]);
        if (input.mappings) await this.mappings.applySet(tx2, actor, id, input.mappings);
        await this.deps.hooks.syncChanged?.(tx2, id, actor.workspaceId);
        return r;
      });
      return (await this.withSlugs(tx, actor.workspaceId, [syncView(row)]))[0];
    } catch (e) {
      if (isUniqueViolation(e, 'syncs_slug_uq')) throw slugTaken('sync', input.slug);
      throw e;
    }
  }

  async update(actor: Actor, ref: string, input: SyncPatchInput, ifMatch?: string): Promise<SyncOutT> {
    requireScope(actor, 'write');
    assertValid(SyncPatch, input);
    if (input.mappings) this.mappings.checkSet(input.mappings, '/mappings');
    return this.db.transaction((tx) => this.apply(tx, actor, ref, input, ifMatch, 'update'));
  }

  async put(actor: Actor, ref: string, input: SyncPutInput, ifMatch?: string, opts: PutOptions = {}): Promise<{ created: boolean; sync: SyncOutT }> {
    requireScope(actor, 'write');
    assertValid(SyncPut, input);
    if (input.mappings) this.mappings.checkSet(input.mappings, '/mappings');
    return (opts.tx ?? this.db).transaction(async (tx) => {
      const r = await putBySlug(tx, syncs, actor.workspaceId, ref, input, ifMatch, (slug) => this.create(actor, { ...input, slug }, tx), async () => {
        // PUT replaces: optional groups not sent go back to their defaults.
        const whole = { schedule: { type: 'manual' as const }, enabled: true, delivery: DEFAULT_DELIVERY, alerts: DEFAULT_ALERTS, changeThresholds: DEFAULT_THRESHOLDS, ...input };
        return await this.apply(tx, actor, ref, whole, ifMatch, 'replace');
      }, { ...opts, readOnly: { view: syncView, fields: readOnlyFields(SyncPutBase, SyncView) } });
      return { created: r.created, sync: r.value };
    });
  }

  private async apply(tx: Tx, actor: Actor, ref: string, input: SyncPatchInput & Partial<RefSlugs>, ifMatch: string | undefined, action: 'update' | 'replace'): Promise<SyncOutT> {
    const cur = await this.row(tx, actor.workspaceId, ref, { forUpdate: true });
    checkVersion(ifMatch, cur.version);
    const merged: SyncCreateInput & Partial<RefSlugs> = {
      slug: input.slug ?? cur.slug,
      name: input.name ?? cur.name,
      modelId: input.modelId ?? cur.modelId,
      destinationId: input.destinationId ?? cur.destinationId,
      object: input.object ?? cur.object,
      mode: input.mode ?? (cur.mode as SyncModeT),
      matchKey: input.matchKey ?? (cur.matchKey as SyncViewT['matchKey']),
      schedule: input.schedule,
      enabled: input.enabled,
      delivery: input.delivery,
      alerts: input.alerts,
      changeThresholds: input.changeThresholds,
      modelSlug: input.modelSlug,
      destinationSlug: input.destinationSlug,
    };
    const next = await this.normalise(tx, actor, merged, action === 'replace' ? undefined : cur);
    const changed = changedFields(cur as unknown as Record<string, unknown>, next, Object.keys(next));
    // The snapshot describes what one destination object holds, matched by one key, under one
    // mode's rules: pointing the sync elsewhere starts a new one (the next run writes every row,
    // and deletes nothing it did not write there). Runs planned against the old one stop at
    // their next checkpoint (runs.snapshot_version no longer matches).
    const repointed = SNAPSHOT_FIELDS.some((f) => changed.includes(f));
    const reset = repointed ? { snapshotVersion: cur.snapshotVersion + 1, snapshotResetAt: new Date() } : {};
    try {
      const [row] = await tx.transaction(async (tx2) => {
        // Mappings sent with the sync are part of the same write, and of the same version bump.
        const mappingsChanged = input.mappings !== undefined && (await this.mappings.applySet(tx2, actor, cur.id, input.mappings));
        if (changed.length === 0 && !mappingsChanged) return [cur] as const;
        const r = await tx2.update(syncs).set({ ...next, ...reset, version: cur.version + 1, updatedAt: new Date() }).where(eq(syncs.id, cur.id)).returning();
        if (repointed) await tx2.delete(syncSnapshots).where(eq(syncSnapshots.syncId, cur.id));
        const fields = [...changed, ...(mappingsChanged ? ['mappings'] : []), ...(repointed ? ['snapshot'] : [])];
        await recordAudit(tx2, actor, action, 'sync', cur.id, fields);
        if (changed.length) await this.deps.hooks.syncChanged?.(tx2, cur.id, actor.workspaceId);
        return r;
      });
      return (await this.withSlugs(tx, actor.workspaceId, [syncView(row)]))[0];
    } catch (e) {
      if (isUniqueViolation(e, 'syncs_slug_uq')) throw slugTaken('sync', next.slug);
      throw e;
    }
  }

  /**
   * Bumps a sync's version (and updatedAt) for a change made to what belongs to it (its
   * mappings), in the caller's transaction, with an audit event naming `changed`. Returns the new
   * version (the sync's next ETag).
   */
  async touch(tx: Tx, actor: Actor, syncId: string, changed: string[]): Promise<number> {
    const [r] = await tx
      .update(syncs)
      .set({ version: sql`${syncs.version} + 1`, updatedAt: new Date() })
      .where(eq(syncs.id, syncId))
      .returning({ version: syncs.version });
    await recordAudit(tx, actor, 'update', 'sync', syncId, changed);
    return r.version;
  }

  async delete(actor: Actor, ref: string, ifMatch?: string, outer: Tx = this.db): Promise<void> {
    requireScope(actor, 'write');
    await outer.transaction(async (tx) => {
      const cur = await this.row(tx, actor.workspaceId, ref, { forUpdate: true });
      checkVersion(ifMatch, cur.version);
      const used = await this.sequences.usingSync(tx, cur.id);
      if (used.length) throw inUse('sync', cur.slug, used);
      await tx.delete(syncs).where(eq(syncs.id, cur.id));
      await recordAudit(tx, actor, 'delete', 'sync', cur.id);
      await this.deps.hooks.syncChanged?.(tx, cur.id, actor.workspaceId);
    });
  }
}
