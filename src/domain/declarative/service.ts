import { createHash } from 'node:crypto';
import { asc, eq } from 'drizzle-orm';
import { alertChannels, connections, mappings, models, sequences, sequenceSteps, syncs, webhookEndpoints } from '../../db/schema.ts';
import type { Tx } from '../../db/client.ts';
import { getConnectorType } from '../../connectors/registry.ts';
import { AppError, UnprocessableError, ValidationError, type FieldError } from '../../errors.ts';
import { assertValid, validateConnectorConfig } from '../../lib/validate.ts';
import type { Actor } from '../context.ts';
import { requireScope, sameJson } from '../common.ts';
import type { ServiceDeps } from '../deps.ts';
import { ConnectionCreate } from '../connections.ts';
import type { ConnectionService } from '../connections.ts';
import { ModelCreate, type ModelService } from '../models.ts';
import { DEFAULT_ALERTS, DEFAULT_DELIVERY, DEFAULT_SCHEDULE, DEFAULT_THRESHOLDS, SyncCreate, validateSchedule, type ScheduleT, type SyncService } from '../syncs.ts';
import { WebhookEndpointCreate, type WebhookService } from '../webhooks.ts';
import { AlertChannelCreate, PAGERDUTY_EVENTS_URL, type AlertChannelService } from '../alert-channels.ts';
import type { MappingService } from '../mappings.ts';
import { SequenceCreate, type SequenceService } from '../sequences.ts';
import type { SecretMeta } from '../secret-meta.ts';
import {
  BUNDLE_API_VERSION,
  BundleEnvelope,
  KINDS,
  MEMBER,
  type ApplyResultT,
  type Bundle,
  type FieldChangeT,
  type Kind,
  type PlannedChangeT,
  type PlanT,
} from './bundle.ts';

// Declarative configuration, Terraform-style: export a workspace as a bundle, plan a bundle
// against the server (creates, field-by-field updates, deletes), apply it in one transaction.
//
// Every write goes through the resource services (their PUT and DELETE, so their rules hold:
// references, capabilities, secrets re-sent on a re-point, audit events) in one transaction:
// creates with If-None-Match: *, updates and deletes with If-Match set to the version the plan
// saw. A resource the plan finds unchanged is not written at all, so applying the same bundle
// twice changes nothing (no version bump, no audit event).
//
// Comparison happens on a canonical form of each resource (`Spec`): the bundle item with the
// defaults the server fills in, and the stored resource with its references as slugs. Secrets
// are compared by the keyed fingerprint the API already shows (src/domain/secret-meta.ts): the
// plan says a secret differs (changed outside the bundle, or in it) and never shows a value.

type Spec = Record<string, unknown>;
type Row<K extends Kind> = K extends 'connection'
  ? typeof connections.$inferSelect
  : K extends 'alertChannel'
    ? typeof alertChannels.$inferSelect
    : K extends 'model'
      ? typeof models.$inferSelect
      : K extends 'sync'
        ? typeof syncs.$inferSelect
        : K extends 'webhookEndpoint'
          ? typeof webhookEndpoints.$inferSelect
          : typeof sequences.$inferSelect;

/** One resource on the server, in canonical form. */
interface Current {
  id: string;
  slug: string;
  version: number;
  spec: Spec;
  /** Secret name → fingerprint (connections, alert channels). */
  secretFingerprints?: Record<string, string>;
  /** Webhook endpoints: the signing secret (opened only to compare). */
  signingSecret?: string;
}

/** The workspace as the plan sees it. */
interface State {
  byKind: Record<Kind, Map<string, Current>>;
  /** id → slug of every slugged resource (references may name ids). */
  slugOfId: Map<string, string>;
}

/** One item of the bundle, checked and in canonical form. */
interface Desired {
  kind: Kind;
  slug: string;
  path: string;
  spec: Spec;
  /** The body sent to the service's PUT. */
  body: Record<string, unknown>;
  /** Secrets named by the bundle (compared by fingerprint; sent, never shown). */
  secrets?: Record<string, unknown>;
  signingSecret?: string;
}

const NOUN: Record<Kind, string> = { connection: 'connection', alertChannel: 'alert channel', model: 'model', sync: 'sync', webhookEndpoint: 'webhook endpoint', sequence: 'sequence' };
const ITEM_SCHEMA: Record<Kind, object> = { connection: ConnectionCreate, alertChannel: AlertChannelCreate, model: ModelCreate, sync: SyncCreate, webhookEndpoint: WebhookEndpointCreate, sequence: SequenceCreate };

/** Reruns `fn`, turning an error's field paths into paths into the bundle (`/syncs/2` + `/mode`). */
function atPath<T>(path: string, what: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw rebase(e, path, what);
  }
}

async function atPathAsync<T>(path: string, what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw rebase(e, path, what);
  }
}

function rebase(e: unknown, path: string, what: string): unknown {
  // Server-side failures (503 database_unavailable…) keep their own class: nothing in the bundle is at fault.
  if (!(e instanceof AppError) || e.status >= 500) return e;
  const errors = (e.errors?.length ? e.errors : [{ path: '', message: e.message }]).map((x) => ({ path: `${path}${x.path}`, message: x.message }));
  return new AppError(e.status, e.code, e.title, { detail: `${what}: ${e.message}`, hint: e.hint, errors, extra: { ...e.extra, bundlePath: path }, cause: e });
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Field-by-field differences (objects recurse; arrays and scalars compare whole). */
function diff(before: unknown, after: unknown, path: string, out: FieldChangeT[]): void {
  if (isPlainObject(before) && isPlainObject(after)) {
    for (const k of [...new Set([...Object.keys(before), ...Object.keys(after)])].sort()) {
      if (before[k] === undefined && after[k] === undefined) continue;
      diff(before[k], after[k], path ? `${path}.${k}` : k, out);
    }
    return;
  }
  if (sameJson(before, after)) return;
  out.push({ field: path, ...(before === undefined ? {} : { before }), ...(after === undefined ? {} : { after }) });
}

/** A sync's mappings keyed by destination field (their order carries no meaning). */
function mappingsByField(list: { destinationField: string; source: unknown }[]): Record<string, unknown> {
  return Object.fromEntries(list.map((m) => [m.destinationField, m.source]));
}

function hashOf(value: unknown): string {
  return createHash('sha256').update(JSON.stringify(value)).digest('base64url').slice(0, 32);
}

/** Builds the exported form of a bundle item: keys in a stable, readable order. */
function ordered(spec: Spec, keys: string[]): Spec {
  const out: Spec = {};
  for (const k of keys) if (spec[k] !== undefined) out[k] = spec[k];
  return out;
}

const ORDER: Record<Kind, string[]> = {
  connection: ['slug', 'name', 'type', 'config', 'secrets'],
  alertChannel: ['slug', 'name', 'type', 'config', 'secrets'],
  model: ['slug', 'name', 'connectionId', 'sql', 'primaryKey'],
  sync: ['slug', 'name', 'modelId', 'destinationId', 'object', 'mode', 'matchKey', 'schedule', 'enabled', 'delivery', 'alerts', 'changeThresholds', 'mappings'],
  webhookEndpoint: ['slug', 'name', 'url', 'description', 'events', 'syncIds', 'enabled'],
  sequence: ['slug', 'name', 'steps', 'schedule', 'onFailure', 'enabled'],
};

export interface DeclarativeServices {
  connections: ConnectionService;
  models: ModelService;
  syncs: SyncService;
  mappings: MappingService;
  webhooks: WebhookService;
  alertChannels: AlertChannelService;
  sequences: SequenceService;
}

export class DeclarativeService {
  private readonly deps: ServiceDeps;
  private readonly s: DeclarativeServices;
  constructor(deps: ServiceDeps, services: DeclarativeServices) {
    this.deps = deps;
    this.s = services;
  }

  private get db() {
    return this.deps.database.db;
  }

  /**
   * The workspace as a bundle: connections (secrets that are `{ env }` references as such; values
   * are never exported), alert channels (likewise), models, syncs with their mappings, and
   * webhook endpoints (without their signing secret) and sequences (steps' syncs by slug), each
   * list sorted by slug, references by slug.
   * Alert channels' `{ env }` secrets are exported like connections'.
   * Applying it to the same workspace is a no-op; to another, it recreates the configuration
   * (secrets that were values must be supplied there).
   */
  async export(actor: Actor): Promise<Bundle> {
    requireScope(actor, 'read');
    const state = await this.load(this.db, actor.workspaceId);
    const out: Record<string, unknown> = { apiVersion: BUNDLE_API_VERSION };
    for (const kind of KINDS) {
      const items = [...state.byKind[kind].values()].sort((a, b) => (a.slug < b.slug ? -1 : 1)).map((c) => ordered(c.spec, ORDER[kind]));
      out[MEMBER[kind]] = items;
    }
    return out as Bundle;
  }

  /**
   * What applying `bundle` would do: creates, updates (each differing field, secrets by
   * fingerprint without values) and, when the bundle says `prune: true`, deletes of what it does
   * not list. Nothing is written.
   * @throws ValidationError 400 (a malformed item, with the path into the bundle); 422
   *   `bundle_duplicate_slug`, `bundle_reference_unknown`, `immutable_field`, and the resource
   *   services' own checks, each with the path into the bundle.
   */
  async plan(actor: Actor, bundle: unknown): Promise<PlanT> {
    requireScope(actor, 'read');
    return (await this.planIn(this.db, actor, bundle)).plan;
  }

  /**
   * Applies `bundle` in one transaction: all of it or nothing. Creates and updates in dependency
   * order (connections, alert channels, models, syncs with their mappings, webhook endpoints),
   * then deletes (prune) in the reverse order. `ifMatch`: the planHash of a reviewed plan; when
   * the plan computed now differs (someone changed the workspace, or the bundle), 412
   * `plan_changed` and nothing is written.
   */
  async apply(actor: Actor, bundle: unknown, ifMatch?: string): Promise<ApplyResultT> {
    requireScope(actor, 'write');
    return this.db.transaction(async (tx) => {
      const { plan, desired } = await this.planIn(tx, actor, bundle);
      if (ifMatch !== undefined) {
        const tags = ifMatch.split(',').map((t) => t.trim().replace(/^W\//, '').replace(/^"(.*)"$/, '$1'));
        if (!tags.includes('*') && !tags.includes(plan.planHash)) {
          throw new AppError(412, 'plan_changed', 'Precondition failed', {
            detail: `The plan is no longer ${ifMatch}: the workspace or the bundle changed since it was made (now ${plan.planHash}). Nothing was applied.`,
            hint: 'Plan again, review the changes, and apply with the new planHash.',
            extra: { planHash: plan.planHash },
          });
        }
      }
      const applied: ApplyResultT['applied'] = [];
      const writes = plan.changes.filter((c) => c.action !== 'delete');
      for (const c of writes) {
        const d = desired.get(`${c.kind}/${c.slug}`)!;
        const r = await atPathAsync(d.path, `${NOUN[c.kind]} "${c.slug}"`, () => this.write(tx, actor, c, d));
        applied.push({ ...c, version: r.version, resultId: r.id });
      }
      const deletes = plan.changes.filter((c) => c.action === 'delete');
      for (const c of deletes) {
        await atPathAsync('', `deleting ${NOUN[c.kind]} "${c.slug}"`, () => this.remove(tx, actor, c));
        applied.push({ ...c, version: null, resultId: c.id });
      }
      return { planHash: plan.planHash, applied, summary: plan.summary };
    });
  }

  private async write(tx: Tx, actor: Actor, c: PlannedChangeT, d: Desired): Promise<{ id: string; version: number }> {
    const ifMatch = c.expectedVersion === null ? undefined : `"${c.expectedVersion}"`;
    const opts = { tx, ...(c.action === 'create' ? { ifNoneMatch: '*' } : {}) };
    const body = d.body as never;
    switch (c.kind) {
      case 'connection':
        return (await this.s.connections.put(actor, c.slug, body, ifMatch, { ...opts, keepUnsentSecrets: true })).connection;
      case 'alertChannel':
        return (await this.s.alertChannels.put(actor, c.slug, body, ifMatch, { ...opts, keepUnsentSecrets: true })).value;
      case 'model':
        return (await this.s.models.put(actor, c.slug, body, ifMatch, opts)).model;
      case 'sync':
        return (await this.s.syncs.put(actor, c.slug, body, ifMatch, opts)).sync;
      case 'webhookEndpoint':
        return (await this.s.webhooks.put(actor, c.slug, body, ifMatch, opts)).value;
      case 'sequence':
        return (await this.s.sequences.put(actor, c.slug, body, ifMatch, opts)).value;
    }
  }

  private async remove(tx: Tx, actor: Actor, c: PlannedChangeT): Promise<void> {
    const ifMatch = `"${c.expectedVersion}"`;
    const svc = { connection: this.s.connections, alertChannel: this.s.alertChannels, model: this.s.models, sync: this.s.syncs, webhookEndpoint: this.s.webhooks, sequence: this.s.sequences }[c.kind];
    await svc.delete(actor, c.id!, ifMatch, tx);
  }

  /** Checks the bundle, reads the workspace (in `tx`) and computes the plan. */
  private async planIn(tx: Tx, actor: Actor, raw: unknown): Promise<{ plan: PlanT; desired: Map<string, Desired> }> {
    assertValid(BundleEnvelope, raw, { what: 'The bundle' });
    const bundle = raw as Bundle & Record<string, unknown[] | undefined>;
    const prune = bundle.prune ?? false;
    // Items against their resource's schema; duplicate slugs.
    const dupes: FieldError[] = [];
    for (const kind of KINDS) {
      const seen = new Set<string>();
      for (const [i, item] of (bundle[MEMBER[kind]] ?? []).entries()) {
        assertValid(ITEM_SCHEMA[kind], item, { prefix: `/${MEMBER[kind]}/${i}`, what: `${NOUN[kind]} ${i + 1} of the bundle` });
        const slug = (item as { slug: string }).slug;
        if (seen.has(slug)) dupes.push({ path: `/${MEMBER[kind]}/${i}/slug`, message: `another ${NOUN[kind]} of the bundle has slug "${slug}"` });
        seen.add(slug);
      }
    }
    if (dupes.length) throw new UnprocessableError('bundle_duplicate_slug', `A slug names one resource of a kind: ${dupes.map((d) => d.path).join(', ')}.`, { errors: dupes });

    const state = await this.load(tx, actor.workspaceId);
    this.checkReferences(bundle, state, prune);
    const desired = new Map<string, Desired>();
    for (const kind of KINDS) {
      for (const [i, item] of (bundle[MEMBER[kind]] ?? []).entries()) {
        const path = `/${MEMBER[kind]}/${i}`;
        const d = atPath(path, `${NOUN[kind]} "${(item as { slug: string }).slug}"`, () => this.desiredOf(kind, item as Record<string, unknown>, state, path));
        desired.set(`${kind}/${d.slug}`, d);
      }
    }

    const changes: PlannedChangeT[] = [];
    let unchanged = 0;
    const hashed: unknown[] = [];
    for (const kind of KINDS) {
      for (const d of [...desired.values()].filter((x) => x.kind === kind)) {
        const cur = state.byKind[kind].get(d.slug);
        // The secrets' values are part of what a plan is (keyed, so the hash reveals nothing).
        if (d.secrets || d.signingSecret !== undefined) hashed.push([d.kind, d.slug, this.deps.secrets.fingerprint('plan', [d.secrets ?? null, d.signingSecret ?? null])]);
        if (!cur) {
          const fields: FieldChangeT[] = Object.entries(d.spec)
            .filter(([k, v]) => k !== 'slug' && v !== undefined && k !== 'secrets')
            .map(([k, v]) => ({ field: k, after: v }));
          for (const n of Object.keys(d.secrets ?? {}).sort()) fields.push({ field: `secrets.${n}`, secret: true });
          if (d.signingSecret !== undefined) fields.push({ field: 'secret', secret: true });
          changes.push({ action: 'create', kind, slug: d.slug, id: null, expectedVersion: null, bundlePath: d.path, fields });
          continue;
        }
        const fields = this.compare(kind, cur, d);
        if (!fields.length) {
          unchanged++;
          continue;
        }
        changes.push({ action: 'update', kind, slug: d.slug, id: cur.id, expectedVersion: cur.version, bundlePath: d.path, fields });
      }
    }
    if (prune) {
      for (const kind of [...KINDS].reverse()) {
        for (const cur of [...state.byKind[kind].values()].sort((a, b) => (a.slug < b.slug ? -1 : 1))) {
          if (!desired.has(`${kind}/${cur.slug}`)) changes.push({ action: 'delete', kind, slug: cur.slug, id: cur.id, expectedVersion: cur.version, bundlePath: null, fields: [] });
        }
      }
    }
    const count = (a: string) => changes.filter((c) => c.action === a).length;
    const plan: PlanT = {
      planHash: hashOf([prune, changes, hashed]),
      prune,
      changes,
      summary: { create: count('create'), update: count('update'), delete: count('delete'), unchanged },
    };
    return { plan, desired };
  }

  /** Every reference names a resource of the bundle, or (unless it would be pruned) of the workspace. */
  private checkReferences(bundle: Bundle & Record<string, unknown[] | undefined>, state: State, prune: boolean): void {
    const errors: FieldError[] = [];
    const inBundle = (kind: Kind) => new Set((bundle[MEMBER[kind]] ?? []).map((x) => (x as { slug: string }).slug));
    const slugs = Object.fromEntries(KINDS.map((k) => [k, inBundle(k)])) as Record<Kind, Set<string>>;
    const check = (kind: Kind, ref: string | undefined, path: string) => {
      if (ref === undefined) return;
      const slug = state.slugOfId.get(ref) ?? ref;
      if (slugs[kind].has(slug)) return;
      if (!prune && state.byKind[kind].has(slug)) return;
      const where = prune ? 'in the bundle (prune: the workspace is what the bundle lists)' : 'in the bundle nor in the workspace';
      errors.push({ path, message: `no ${NOUN[kind]} "${ref}" ${where}` });
    };
    for (const [i, m] of (bundle.models ?? []).entries()) check('connection', m.connectionId, `/models/${i}/connectionId`);
    for (const [i, s] of (bundle.syncs ?? []).entries()) {
      check('model', s.modelId, `/syncs/${i}/modelId`);
      check('connection', s.destinationId, `/syncs/${i}/destinationId`);
      for (const [j, ch] of (s.alerts?.channelIds ?? []).entries()) check('alertChannel', ch, `/syncs/${i}/alerts/channelIds/${j}`);
    }
    for (const [i, w] of (bundle.webhookEndpoints ?? []).entries()) for (const [j, s] of (w.syncIds ?? []).entries()) check('sync', s, `/webhookEndpoints/${i}/syncIds/${j}`);
    for (const [i, q] of (bundle.sequences ?? []).entries()) for (const [j, st] of q.steps.entries()) check('sync', st.syncId, `/sequences/${i}/steps/${j}/syncId`);
    if (errors.length) {
      throw new UnprocessableError('bundle_reference_unknown', `The bundle refers to resources that do not exist: ${errors.map((e) => `${e.path} (${e.message})`).join('; ')}.`, {
        errors,
        hint: 'Refer to resources by slug: add the missing ones to the bundle, or fix the slug.',
      });
    }
  }

  /** A bundle item in canonical form (defaults filled in, references as slugs) and the body its PUT takes. */
  private desiredOf(kind: Kind, item: Record<string, unknown>, state: State, path: string): Desired {
    const slug = item.slug as string;
    const slugOf = (ref: unknown) => (typeof ref === 'string' ? (state.slugOfId.get(ref) ?? ref) : ref);
    switch (kind) {
      case 'connection': {
        const t = getConnectorType(item.type as string);
        if (!t) throw new ValidationError(`Unknown connector type "${String(item.type)}".`, [{ path: '/type', message: 'is not a connector type' }], 'unknown_connector_type');
        const config = validateConnectorConfig(t.configSchema, item.config);
        const cur = state.byKind.connection.get(slug);
        if (cur && cur.spec.type !== item.type) {
          throw new UnprocessableError('immutable_field', `A connection's type cannot change (it is "${String(cur.spec.type)}").`, { errors: [{ path: '/type', message: 'cannot change' }] });
        }
        const secrets = item.secrets as Record<string, unknown> | undefined;
        const spec = { slug, name: item.name, type: item.type, config };
        return { kind, slug, path, spec, body: { name: item.name, type: item.type, config, ...(secrets ? { secrets } : {}) }, secrets };
      }
      case 'alertChannel': {
        const config = (item.config as Record<string, unknown> | undefined) ?? {};
        const full = item.type === 'pagerduty' ? { eventsUrl: PAGERDUTY_EVENTS_URL, severity: 'error', ...config } : config;
        const secrets = item.secrets as Record<string, unknown> | undefined;
        const cur = state.byKind.alertChannel.get(slug);
        // A channel of another type starts without the old type's secrets: the bundle must name them.
        return { kind, slug, path, spec: { slug, name: item.name, type: item.type, config: full }, body: { name: item.name, type: item.type, config: full, ...(secrets ? { secrets } : {}) }, secrets: cur && cur.spec.type !== item.type ? (secrets ?? {}) : secrets };
      }
      case 'model': {
        const spec = { slug, name: item.name, connectionId: slugOf(item.connectionId), sql: item.sql, primaryKey: item.primaryKey };
        return { kind, slug, path, spec, body: { name: spec.name, connectionId: spec.connectionId, sql: spec.sql, primaryKey: spec.primaryKey } };
      }
      case 'sync': {
        const alerts = { ...DEFAULT_ALERTS, ...(item.alerts as object) } as typeof DEFAULT_ALERTS;
        const list = item.mappings as { destinationField: string; source: unknown }[] | undefined;
        if (list) this.s.mappings.checkSet(list as never, '/mappings');
        const spec: Spec = {
          slug,
          name: item.name,
          modelId: slugOf(item.modelId),
          destinationId: slugOf(item.destinationId),
          object: item.object,
          mode: item.mode,
          matchKey: item.matchKey,
          schedule: validateSchedule((item.schedule as ScheduleT | undefined) ?? { type: 'manual' }),
          enabled: item.enabled ?? true,
          delivery: { ...DEFAULT_DELIVERY, ...(item.delivery as object) },
          alerts: { ...alerts, channelIds: alerts.channelIds.map((c) => slugOf(c) as string) },
          changeThresholds: { ...DEFAULT_THRESHOLDS, ...(item.changeThresholds as object) },
          ...(list ? { mappings: list.map((m) => ({ destinationField: m.destinationField, source: m.source })) } : {}),
        };
        const { slug: _s, ...body } = spec;
        return { kind, slug, path, spec, body };
      }
      case 'webhookEndpoint': {
        const spec: Spec = {
          slug,
          name: item.name,
          url: item.url,
          description: item.description ?? null,
          events: item.events ?? [],
          syncIds: ((item.syncIds as string[] | undefined) ?? []).map((s) => slugOf(s)),
          enabled: item.enabled ?? true,
        };
        const { slug: _s, ...body } = spec;
        const signingSecret = item.secret as string | undefined;
        return { kind, slug, path, spec, body: { ...body, ...(signingSecret !== undefined ? { secret: signingSecret } : {}) }, signingSecret };
      }
      case 'sequence': {
        // A step is its sync (by slug); `syncSlug`, read-only in the API, adds nothing here.
        const spec: Spec = {
          slug,
          name: item.name,
          steps: (item.steps as { syncId: string }[]).map((st) => ({ syncId: slugOf(st.syncId) })),
          schedule: validateSchedule((item.schedule as ScheduleT | undefined) ?? DEFAULT_SCHEDULE),
          onFailure: item.onFailure ?? 'stop',
          enabled: item.enabled ?? true,
        };
        const { slug: _s, ...body } = spec;
        return { kind, slug, path, spec, body };
      }
    }
  }

  /** The fields of `d` that differ from the server's resource; secrets by fingerprint, never by value. */
  private compare(kind: Kind, cur: Current, d: Desired): FieldChangeT[] {
    const out: FieldChangeT[] = [];
    const a: Spec = { ...cur.spec };
    const b: Spec = { ...d.spec };
    delete a.secrets;
    let maps: [Record<string, unknown>, Record<string, unknown>] | undefined;
    if (kind === 'sync') {
      // A mapping's source is one thing (a column, a static value, a template, a lookup): compared whole, per destination field.
      if (b.mappings !== undefined) maps = [mappingsByField(a.mappings as never), mappingsByField(b.mappings as never)];
      delete a.mappings;
      delete b.mappings;
    }
    diff(a, b, '', out);
    if (maps) {
      const [x, y] = maps;
      for (const f of [...new Set([...Object.keys(x), ...Object.keys(y)])].sort()) {
        if (!sameJson(x[f], y[f])) out.push({ field: `mappings.${f}`, ...(x[f] === undefined ? {} : { before: x[f] }), ...(y[f] === undefined ? {} : { after: y[f] }) });
      }
    }
    for (const [name, value] of Object.entries(d.secrets ?? {}).sort(([x], [y]) => (x < y ? -1 : 1))) {
      // The fingerprint the server would give this value (scoped by resource and name).
      if (cur.secretFingerprints?.[name] !== this.deps.secrets.fingerprint(`${cur.id}/${name}`, value)) out.push({ field: `secrets.${name}`, secret: true });
    }
    if (d.signingSecret !== undefined && d.signingSecret !== cur.signingSecret) out.push({ field: 'secret', secret: true });
    return out;
  }

  /** The workspace's configuration, in canonical form (read in `tx`, so apply plans what it writes). */
  private async load(tx: Tx, workspaceId: string): Promise<State> {
    const [conns, channels, mdls, syncRows, hooks, maps, seqs, steps] = await Promise.all([
      tx.select().from(connections).where(eq(connections.workspaceId, workspaceId)),
      tx.select().from(alertChannels).where(eq(alertChannels.workspaceId, workspaceId)),
      tx.select().from(models).where(eq(models.workspaceId, workspaceId)),
      tx.select().from(syncs).where(eq(syncs.workspaceId, workspaceId)),
      tx.select().from(webhookEndpoints).where(eq(webhookEndpoints.workspaceId, workspaceId)),
      tx.select().from(mappings).where(eq(mappings.workspaceId, workspaceId)).orderBy(asc(mappings.destinationField)),
      tx.select().from(sequences).where(eq(sequences.workspaceId, workspaceId)),
      tx
        .select({ sequenceId: sequenceSteps.sequenceId, syncId: sequenceSteps.syncId })
        .from(sequenceSteps)
        .innerJoin(sequences, eq(sequences.id, sequenceSteps.sequenceId))
        .where(eq(sequences.workspaceId, workspaceId))
        .orderBy(asc(sequenceSteps.sequenceId), asc(sequenceSteps.position)),
    ]);
    const slugOfId = new Map<string, string>();
    for (const r of [...conns, ...channels, ...mdls, ...syncRows, ...hooks, ...seqs]) slugOfId.set(r.id, r.slug);
    const slugOf = (ref: string) => slugOfId.get(ref) ?? ref;
    const fps = (meta: unknown) => Object.fromEntries(Object.entries((meta ?? {}) as SecretMeta).map(([k, v]) => [k, v.fingerprint]));
    const byKind = Object.fromEntries(KINDS.map((k) => [k, new Map<string, Current>()])) as State['byKind'];
    const put = <K extends Kind>(kind: K, r: Row<K>, spec: Spec, extra: Partial<Current> = {}) =>
      byKind[kind].set(r.slug, { id: r.id, slug: r.slug, version: r.version, spec, ...extra });

    // Only `{ env }` references are exported: they name a variable, not a value.
    const envRefs = (sealed: string | null) => {
      const stored = sealed ? this.deps.secrets.open(sealed) : {};
      const refs = Object.fromEntries(Object.entries(stored).filter(([, v]) => isPlainObject(v) && typeof v.env === 'string').sort(([x], [y]) => (x < y ? -1 : 1)));
      return Object.keys(refs).length ? { secrets: refs } : {};
    };
    for (const r of conns) put('connection', r, { slug: r.slug, name: r.name, type: r.type, config: r.config, ...envRefs(r.secretsSealed) }, { secretFingerprints: fps(r.secretMeta) });
    for (const r of channels) put('alertChannel', r, { slug: r.slug, name: r.name, type: r.type, config: r.config, ...envRefs(r.secretsSealed) }, { secretFingerprints: fps(r.secretMeta) });
    for (const r of mdls) put('model', r, { slug: r.slug, name: r.name, connectionId: slugOf(r.connectionId), sql: r.sql, primaryKey: r.primaryKey });
    const mapsBySync = new Map<string, { destinationField: string; source: unknown }[]>();
    for (const m of maps) {
      if (!mapsBySync.has(m.syncId)) mapsBySync.set(m.syncId, []);
      mapsBySync.get(m.syncId)!.push({ destinationField: m.destinationField, source: m.source });
    }
    for (const r of syncRows) {
      const alerts = { ...DEFAULT_ALERTS, ...(r.alerts as object) } as typeof DEFAULT_ALERTS;
      put('sync', r, {
        slug: r.slug,
        name: r.name,
        modelId: slugOf(r.modelId),
        destinationId: slugOf(r.destinationId),
        object: r.object,
        mode: r.mode,
        matchKey: r.matchKey,
        schedule: r.schedule,
        enabled: r.enabled,
        delivery: { ...DEFAULT_DELIVERY, ...(r.delivery as object) },
        alerts: { ...alerts, channelIds: alerts.channelIds.map(slugOf) },
        changeThresholds: { ...DEFAULT_THRESHOLDS, ...(r.changeThresholds as object) },
        mappings: mapsBySync.get(r.id) ?? [],
      });
    }
    for (const r of hooks) {
      put(
        'webhookEndpoint',
        r,
        { slug: r.slug, name: r.name, url: r.url, description: r.description, events: r.events, syncIds: r.syncIds.map(slugOf), enabled: r.enabled },
        { signingSecret: this.deps.secrets.open(r.secretSealed).secret as string },
      );
    }
    const stepsBySeq = new Map<string, { syncId: string }[]>();
    for (const st of steps) {
      if (!stepsBySeq.has(st.sequenceId)) stepsBySeq.set(st.sequenceId, []);
      stepsBySeq.get(st.sequenceId)!.push({ syncId: slugOf(st.syncId) });
    }
    for (const r of seqs) {
      put('sequence', r, { slug: r.slug, name: r.name, steps: stepsBySeq.get(r.id) ?? [], schedule: r.schedule, onFailure: r.onFailure, enabled: r.enabled });
    }
    return { byKind, slugOfId };
  }
}
