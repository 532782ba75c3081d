import { isIP } from 'node:net';
import { Type, type Static } from '@sinclair/typebox';
import { and, asc, desc, eq, gt, inArray, lt, or, sql } from 'drizzle-orm';
import { callbackSecrets, syncs, webhookDeliveries, webhookEndpoints } from '../db/schema.ts';
import type { Tx } from '../db/client.ts';
import { NotFoundError, UnprocessableError } from '../errors.ts';
import { addressRefusal } from '../lib/address-guard.ts';
import { newId } from '../lib/ids.ts';
import { assertValid } from '../lib/validate.ts';
import { generateSecret, isValidSecret, SECRET_PATTERN } from '../lib/signing.ts';
import { recordAudit } from './audit.ts';
import type { Actor } from './context.ts';
import { changedFields, checkVersion, decodeCursor, isUniqueViolation, iso, pageLimit, requireScope, slugTaken, toPage, type Page } from './common.ts';
import { Name, Slug } from './connections.ts';
import type { ServiceDeps } from './deps.ts';
import { getByRef, putBySlug, type PutOptions } from './refs.ts';
import { acceptingReadOnly, readOnlyFields } from './read-only.ts';
import { withoutDefaults } from './defaults.ts';

// Webhook endpoints (subscriptions with a signing secret), their deliveries, and the
// workspace's callback secret (signs the run.completed sent to a trigger's callbackUrl).
// Deliveries are rows plus a graphile-worker job each (src/notify/webhook-sender.ts sends them);
// they are written in the same transaction as what caused them.

export const EVENT_TYPES = ['run.started', 'run.completed', 'alert.raised', 'alert.resolved', 'sequence_run.completed'] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/** Event types as a plain string enum (cheap to serialize, an enum for client generators). */
const EventTypeEnum = Type.Unsafe<EventType>({ type: 'string', enum: [...EVENT_TYPES] });
const EventList = Type.Array(Type.Union(EVENT_TYPES.map((e) => Type.Literal(e))), {
  uniqueItems: true,
  maxItems: EVENT_TYPES.length,
  default: [],
  description: 'Event types to deliver; empty or absent = all',
});
const SyncFilter = Type.Array(Type.String({ minLength: 1, maxLength: 100 }), {
  uniqueItems: true,
  maxItems: 100,
  default: [],
  description: 'Only events about these syncs (ids or slugs); empty or absent = all syncs',
});
export const WebhookUrl = Type.String({ format: 'uri', pattern: '^https?://', maxLength: 2000 });
const Secret = Type.String({ pattern: SECRET_PATTERN, description: 'whsec_ + base64 of 24–64 random bytes; generated when absent' });
const Description = Type.String({ maxLength: 1000 });

const endpointFields = {
  name: Name,
  url: WebhookUrl,
  description: Type.Optional(Type.Union([Description, Type.Null()], { default: null })),
  events: Type.Optional(EventList),
  syncIds: Type.Optional(SyncFilter),
  enabled: Type.Optional(Type.Boolean({ default: true })),
};
export const WebhookEndpointCreate = Type.Object({ slug: Slug, ...endpointFields, secret: Type.Optional(Secret) }, { additionalProperties: false, $id: 'WebhookEndpointCreate' });
const WebhookEndpointPutBase = Type.Object(
  { slug: Type.Optional(Slug), ...endpointFields, secret: Type.Optional(Secret) },
  { additionalProperties: false, description: 'A secret different from the current one rotates it (default grace period)' },
);
export const WebhookEndpointPatch = withoutDefaults(Type.Partial(Type.Object({ slug: Slug, ...endpointFields }), { additionalProperties: false, $id: 'WebhookEndpointPatch' }));
export const SecretRotation = Type.Object(
  {
    secret: Type.Optional(Secret),
    gracePeriodSeconds: Type.Optional(Type.Integer({ minimum: 0, maximum: 7 * 86400, default: 86_400, description: 'How long the previous secret keeps signing too, in seconds' })),
  },
  { additionalProperties: false, $id: 'SecretRotation' },
);
export const WebhookEndpointView = Type.Object(
  {
    id: Type.String(),
    slug: Type.String(),
    name: Type.String(),
    url: Type.String(),
    description: Type.Union([Type.String(), Type.Null()]),
    events: Type.Array(EventTypeEnum, { description: 'Event types delivered; empty = all' }),
    syncIds: Type.Array(Type.String()),
    enabled: Type.Boolean(),
    disabledReason: Type.Union([Type.String(), Type.Null()]),
    secret: Type.Optional(Type.String({ description: 'Only in the answer to a create or a rotation' })),
    previousSecretExpiresAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
    createdAt: Type.String({ format: 'date-time' }),
    updatedAt: Type.String({ format: 'date-time' }),
    version: Type.Integer(),
  },
  { $id: 'WebhookEndpoint' },
);
export const WebhookAttempt = Type.Object({
  attempt: Type.Integer(),
  at: Type.String({ format: 'date-time' }),
  statusCode: Type.Union([Type.Integer(), Type.Null()]),
  durationMs: Type.Integer(),
  error: Type.Union([Type.Object({ code: Type.String(), message: Type.String() }), Type.Null()]),
  responseExcerpt: Type.Union([Type.String(), Type.Null()]),
});
export const WebhookDeliveryView = Type.Object(
  {
    id: Type.String(),
    endpointId: Type.Union([Type.String(), Type.Null()]),
    target: Type.Union([Type.Literal('endpoint'), Type.Literal('callback')]),
    url: Type.String(),
    messageId: Type.String({ description: 'The webhook-id header (same across retries and redeliveries)' }),
    eventType: EventTypeEnum,
    runId: Type.Union([Type.String(), Type.Null()]),
    status: Type.Union([Type.Literal('pending'), Type.Literal('succeeded'), Type.Literal('failed')]),
    attempts: Type.Array(WebhookAttempt),
    nextAttemptAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
    redeliveryOf: Type.Union([Type.String(), Type.Null()]),
    payload: Type.Object({}, { additionalProperties: true }),
    createdAt: Type.String({ format: 'date-time' }),
  },
  { $id: 'WebhookDelivery' },
);
export const CallbackSecretView = Type.Object(
  {
    secret: Type.Optional(Type.String({ description: 'Only in the answer to a rotation' })),
    configured: Type.Boolean(),
    rotatedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
    previousSecretExpiresAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  },
  { $id: 'CallbackSecret' },
);

export type WebhookEndpointCreateInput = Static<typeof WebhookEndpointCreate>;
export const WebhookEndpointPut = acceptingReadOnly(WebhookEndpointPutBase, WebhookEndpointView, { $id: 'WebhookEndpointPut' });
export type WebhookEndpointPutInput = Static<typeof WebhookEndpointPutBase>;
export type WebhookEndpointPatchInput = Static<typeof WebhookEndpointPatch>;
export type WebhookEndpointViewT = Static<typeof WebhookEndpointView>;
export type WebhookDeliveryViewT = Static<typeof WebhookDeliveryView>;
export type WebhookAttemptT = Static<typeof WebhookAttempt>;
export type SecretRotationInput = Static<typeof SecretRotation>;
export type CallbackSecretViewT = Static<typeof CallbackSecretView>;
type EndpointRow = typeof webhookEndpoints.$inferSelect;
export type DeliveryRow = typeof webhookDeliveries.$inferSelect;

export const DEFAULT_GRACE_SECONDS = 86_400;

export function endpointView(r: EndpointRow, secret?: string): WebhookEndpointViewT {
  const prevActive = r.previousSecretExpiresAt && r.previousSecretExpiresAt.getTime() > Date.now() ? r.previousSecretExpiresAt : null;
  return {
    id: r.id,
    slug: r.slug,
    name: r.name,
    url: r.url,
    description: r.description,
    events: r.events as EventType[],
    syncIds: r.syncIds,
    enabled: r.enabled,
    disabledReason: r.disabledReason,
    ...(secret ? { secret } : {}),
    previousSecretExpiresAt: iso(prevActive),
    createdAt: iso(r.createdAt)!,
    updatedAt: iso(r.updatedAt)!,
    version: r.version,
  };
}

export function deliveryView(r: DeliveryRow): WebhookDeliveryViewT {
  let payload: Record<string, unknown> = {};
  try {
    payload = JSON.parse(r.body) as Record<string, unknown>;
  } catch {
    // bodies are always JSON we wrote
  }
  return {
    id: r.id,
    endpointId: r.endpointId,
    target: r.endpointId ? 'endpoint' : 'callback',
    url: r.url,
    messageId: r.messageId,
    eventType: r.eventType as EventType,
    runId: r.runId,
    status: r.status as WebhookDeliveryViewT['status'],
    attempts: r.attempts as WebhookAttemptT[],
    nextAttemptAt: iso(r.nextAttemptAt),
    redeliveryOf: r.redeliveryOf,
    payload,
    createdAt: iso(r.createdAt)!,
  };
}

/** The URL may not name a forbidden IP literal (names are checked after DNS, at send time). */
export function checkWebhookUrl(url: string, denyPrivateNetworks: boolean, path: string): void {
  let host: string;
  try {
    host = new URL(url).hostname.replace(/^\[|\]$/g, '');
  } catch {
    throw new UnprocessableError('invalid_url', `"${url.slice(0, 200)}" is not a URL this server can call.`, { errors: [{ path, message: 'is not a valid http(s) URL' }] });
  }
  const reason = isIP(host) ? addressRefusal(host, denyPrivateNetworks) : undefined;
  if (reason) {
    throw new UnprocessableError('address_not_allowed', `Refusing ${url}: ${reason}.`, {
      errors: [{ path, message: reason }],
      hint: 'Use a public address, or (for private networks) ask the operator to allow them. Metadata and link-local addresses are never allowed.',
    });
  }
}

/** Enqueues the delivery job (in the caller's transaction). Per-endpoint queues: one slow endpoint holds at most one worker slot. */
export async function enqueueDelivery(tx: Tx, d: { id: string; endpointId: string | null }, runAt?: Date): Promise<void> {
  const queue = d.endpointId ? `webhook:${d.endpointId}` : null;
  await tx.execute(
    sql`select graphile_worker.add_job('backhaul_webhook', json_build_object('deliveryId', ${d.id}::text), queue_name => ${queue}::text, run_at => ${runAt ? runAt.toISOString() : null}::timestamptz, job_key => ${`whd:${d.id}`}::text, max_attempts => 5)`,
  );
}

export interface EventSubject {
  workspaceId: string;
  syncId?: string;
  /** An event about several syncs (a sequence run's steps): endpoints filtered on any of them get it. */
  syncIds?: string[];
  runId?: string;
  /** A run's callbackUrl: also receives the event (run.completed only). */
  callbackUrl?: string | null;
}

export class WebhookService {
  private readonly deps: ServiceDeps;
  constructor(deps: ServiceDeps) {
    this.deps = deps;
  }

  private get db() {
    return this.deps.database.db;
  }

  async list(actor: Actor, params: { limit?: number; cursor?: string } = {}): Promise<Page<WebhookEndpointViewT>> {
    requireScope(actor, 'read');
    const limit = pageLimit(params.limit);
    const after = decodeCursor(params.cursor);
    const conds = [eq(webhookEndpoints.workspaceId, actor.workspaceId)];
    if (after) conds.push(gt(webhookEndpoints.id, after));
    const rows = await this.db.select().from(webhookEndpoints).where(and(...conds)).orderBy(asc(webhookEndpoints.id)).limit(limit + 1);
    return toPage(rows, limit, (r) => endpointView(r));
  }

  async get(actor: Actor, ref: string): Promise<WebhookEndpointViewT> {
    requireScope(actor, 'read');
    return endpointView(await this.row(this.db, actor.workspaceId, ref));
  }

  row(tx: Tx, workspaceId: string, ref: string, opts: { forUpdate?: boolean } = {}): Promise<EndpointRow> {
    return getByRef(tx, webhookEndpoints, 'webhook endpoint', workspaceId, ref, opts);
  }

  /** Sync refs (ids or slugs) → ids; an unknown one is a 422 naming its index. */
  private async resolveSyncs(tx: Tx, workspaceId: string, refs: string[] | undefined): Promise<string[] | undefined> {
    if (refs === undefined) return undefined;
    if (!refs.length) return [];
    const rows = await tx
      .select({ id: syncs.id, slug: syncs.slug })
      .from(syncs)
      .where(and(eq(syncs.workspaceId, workspaceId), or(inArray(syncs.id, refs), inArray(syncs.slug, refs))));
    const errors = refs.map((r, i) => ({ r, i })).filter(({ r }) => !rows.some((x) => x.id === r || x.slug === r));
    if (errors.length) {
      throw new UnprocessableError('invalid_reference', `sync ${errors.map((e) => `"${e.r}"`).join(', ')} does not exist in this workspace.`, {
        errors: errors.map(({ i }) => ({ path: `/syncIds/${i}`, message: 'no sync with this id or slug' })),
      });
    }
    return [...new Set(refs.map((r) => rows.find((x) => x.id === r || x.slug === r)!.id))];
  }

  private givenSecret(secret: string | undefined): string {
    if (secret === undefined) return generateSecret();
    if (!isValidSecret(secret)) throw new UnprocessableError('invalid_secret', 'The secret must be whsec_ followed by the base64 of 24 to 64 bytes.', { errors: [{ path: '/secret', message: 'must decode to 24–64 bytes' }] });
    return secret;
  }

  async create(actor: Actor, input: WebhookEndpointCreateInput, tx: Tx = this.db): Promise<WebhookEndpointViewT> {
    requireScope(actor, 'write');
    assertValid(WebhookEndpointCreate, input);
    checkWebhookUrl(input.url, this.deps.denyPrivateNetworks, '/url');
    const secret = this.givenSecret(input.secret);
    const id = newId('webhookEndpoint');
    try {
      const row = await tx.transaction(async (tx2) => {
        const syncIds = (await this.resolveSyncs(tx2, actor.workspaceId, input.syncIds)) ?? [];
        const [r] = await tx2
          .insert(webhookEndpoints)
          .values({
            id,
            workspaceId: actor.workspaceId,
            slug: input.slug,
            name: input.name,
            url: input.url,
            description: input.description ?? null,
            events: input.events ?? [],
            syncIds,
            enabled: input.enabled ?? true,
            secretSealed: this.deps.secrets.seal({ secret }),
          })
          .returning();
        await recordAudit(tx2, actor, 'create', 'webhook_endpoint', id, ['slug', 'name', 'url', 'events', 'syncIds', 'enabled', 'secret']);
        return r;
      });
      return endpointView(row, secret);
    } catch (e) {
      if (isUniqueViolation(e, 'webhook_endpoints_slug_uq')) throw slugTaken('webhook endpoint', input.slug);
      throw e;
    }
  }

  async update(actor: Actor, ref: string, input: WebhookEndpointPatchInput, ifMatch?: string): Promise<WebhookEndpointViewT> {
    requireScope(actor, 'write');
    assertValid(WebhookEndpointPatch, input);
    return this.db.transaction((tx) => this.replaceWith(tx, actor, ref, input, ifMatch, 'update'));
  }

  async put(actor: Actor, ref: string, input: WebhookEndpointPutInput, ifMatch?: string, opts: PutOptions = {}): Promise<{ created: boolean; value: WebhookEndpointViewT }> {
    requireScope(actor, 'write');
    assertValid(WebhookEndpointPut, input);
    return (opts.tx ?? this.db).transaction(async (tx) => {
      const r = await putBySlug(tx, webhookEndpoints, actor.workspaceId, ref, input, ifMatch, (slug) => this.create(actor, { ...input, slug }, tx), async () => {
        // PUT is whole: absent optional fields go back to their defaults.
        const { secret, ...rest } = input;
        const whole = { description: null, events: [], syncIds: [], enabled: true, ...rest };
        let value = await this.replaceWith(tx, actor, ref, whole, ifMatch, 'replace');
        if (secret !== undefined) {
          const cur = await this.row(tx, actor.workspaceId, value.id, { forUpdate: true });
          if ((this.deps.secrets.open(cur.secretSealed).secret as string) !== secret) value = await this.rotateIn(tx, actor, cur, { secret });
        }
        return value;
      }, { ...opts, readOnly: { view: (r) => endpointView(r), fields: readOnlyFields(WebhookEndpointPutBase, WebhookEndpointView) } });
      return { created: r.created, value: r.value };
    });
  }

  private async replaceWith(tx: Tx, actor: Actor, ref: string, input: WebhookEndpointPatchInput, ifMatch: string | undefined, action: 'update' | 'replace'): Promise<WebhookEndpointViewT> {
    const cur = await this.row(tx, actor.workspaceId, ref, { forUpdate: true });
    checkVersion(ifMatch, cur.version);
    if (input.url !== undefined) checkWebhookUrl(input.url, this.deps.denyPrivateNetworks, '/url');
    const syncIds = await this.resolveSyncs(tx, actor.workspaceId, input.syncIds);
    const next = {
      slug: input.slug ?? cur.slug,
      name: input.name ?? cur.name,
      url: input.url ?? cur.url,
      description: input.description !== undefined ? input.description : cur.description,
      events: input.events ?? cur.events,
      syncIds: syncIds ?? cur.syncIds,
      enabled: input.enabled ?? cur.enabled,
    };
    const fields = ['slug', 'name', 'url', 'description', 'events', 'syncIds', 'enabled'];
    const changed = changedFields(cur as unknown as Record<string, unknown>, next, fields);
    if (!changed.length) return endpointView(cur);
    try {
      const [row] = await tx.transaction(async (tx2) => {
        const r = await tx2
          .update(webhookEndpoints)
          // Enabling again clears the reason it was disabled.
          .set({ ...next, disabledReason: next.enabled ? null : cur.disabledReason, version: cur.version + 1, updatedAt: new Date() })
          .where(eq(webhookEndpoints.id, cur.id))
          .returning();
        await recordAudit(tx2, actor, action, 'webhook_endpoint', cur.id, changed);
        return r;
      });
      return endpointView(row);
    } catch (e) {
      if (isUniqueViolation(e, 'webhook_endpoints_slug_uq')) throw slugTaken('webhook endpoint', next.slug);
      throw e;
    }
  }

  async delete(actor: Actor, ref: string, ifMatch?: string, outer: Tx = this.db): Promise<void> {
    requireScope(actor, 'write');
    await outer.transaction(async (tx) => {
      const cur = await this.row(tx, actor.workspaceId, ref, { forUpdate: true });
      checkVersion(ifMatch, cur.version);
      // Pending deliveries go with it (cascade); their jobs find no row and end.
      await tx.delete(webhookEndpoints).where(eq(webhookEndpoints.id, cur.id));
      await recordAudit(tx, actor, 'delete', 'webhook_endpoint', cur.id);
    });
  }

  /** New secret (given or generated); the previous one keeps signing for the grace period. */
  async rotateSecret(actor: Actor, ref: string, input: SecretRotationInput = {}): Promise<WebhookEndpointViewT> {
    requireScope(actor, 'write');
    assertValid(SecretRotation, input);
    return this.db.transaction(async (tx) => this.rotateIn(tx, actor, await this.row(tx, actor.workspaceId, ref, { forUpdate: true }), input));
  }

  private async rotateIn(tx: Tx, actor: Actor, cur: EndpointRow, input: SecretRotationInput): Promise<WebhookEndpointViewT> {
    const secret = this.givenSecret(input.secret);
    const grace = input.gracePeriodSeconds ?? DEFAULT_GRACE_SECONDS;
    const [row] = await tx
      .update(webhookEndpoints)
      .set({
        secretSealed: this.deps.secrets.seal({ secret }),
        previousSecretSealed: grace > 0 ? cur.secretSealed : null,
        previousSecretExpiresAt: grace > 0 ? new Date(Date.now() + grace * 1000) : null,
        version: cur.version + 1,
        updatedAt: new Date(),
      })
      .where(eq(webhookEndpoints.id, cur.id))
      .returning();
    await recordAudit(tx, actor, 'rotate', 'webhook_endpoint', cur.id, ['secret']);
    return endpointView(row, secret);
  }

  /** The secrets an endpoint's messages are signed with now: current, plus the previous one during its grace period. */
  endpointSecrets(row: EndpointRow, nowMs: number): string[] {
    const out = [this.deps.secrets.open(row.secretSealed).secret as string];
    if (row.previousSecretSealed && row.previousSecretExpiresAt && row.previousSecretExpiresAt.getTime() > nowMs) {
      out.push(this.deps.secrets.open(row.previousSecretSealed).secret as string);
    }
    return out;
  }

  // ---- Callback secret -----------------------------------------------------------------------

  async callbackSecret(actor: Actor): Promise<CallbackSecretViewT> {
    requireScope(actor, 'read');
    const [row] = await this.db.select().from(callbackSecrets).where(eq(callbackSecrets.workspaceId, actor.workspaceId));
    return callbackView(row);
  }

  /** Rotates (or first creates) the workspace's callback secret and returns it, once. */
  async rotateCallbackSecret(actor: Actor, input: SecretRotationInput = {}): Promise<CallbackSecretViewT> {
    requireScope(actor, 'admin');
    assertValid(SecretRotation, input);
    const secret = this.givenSecret(input.secret);
    const grace = input.gracePeriodSeconds ?? DEFAULT_GRACE_SECONDS;
    return this.db.transaction(async (tx) => {
      const [cur] = await tx.select().from(callbackSecrets).where(eq(callbackSecrets.workspaceId, actor.workspaceId)).for('update');
      const values = {
        secretSealed: this.deps.secrets.seal({ secret }),
        previousSecretSealed: cur && grace > 0 ? cur.secretSealed : null,
        previousSecretExpiresAt: cur && grace > 0 ? new Date(Date.now() + grace * 1000) : null,
        updatedAt: new Date(),
      };
      const [row] = cur
        ? await tx.update(callbackSecrets).set(values).where(eq(callbackSecrets.workspaceId, actor.workspaceId)).returning()
        : await tx.insert(callbackSecrets).values({ workspaceId: actor.workspaceId, ...values }).returning();
      await recordAudit(tx, actor, 'rotate', 'callback_secret', actor.workspaceId, ['secret']);
      return { ...callbackView(row), secret };
    });
  }

  /** Secrets signing a workspace's callbacks; one is generated when the workspace has none yet. */
  async callbackSecrets(workspaceId: string, nowMs: number): Promise<string[]> {
    let [row] = await this.db.select().from(callbackSecrets).where(eq(callbackSecrets.workspaceId, workspaceId));
    if (!row) {
      await this.db.insert(callbackSecrets).values({ workspaceId, secretSealed: this.deps.secrets.seal({ secret: generateSecret() }) }).onConflictDoNothing();
      [row] = await this.db.select().from(callbackSecrets).where(eq(callbackSecrets.workspaceId, workspaceId));
    }
    const out = [this.deps.secrets.open(row.secretSealed).secret as string];
    if (row.previousSecretSealed && row.previousSecretExpiresAt && row.previousSecretExpiresAt.getTime() > nowMs) {
      out.push(this.deps.secrets.open(row.previousSecretSealed).secret as string);
    }
    return out;
  }

  // ---- Events and deliveries -------------------------------------------------------------------

  /**
   * Records one message for every enabled endpoint subscribed to `type` (and to the subject's
   * sync), plus the subject's callbackUrl for run.completed, and enqueues their jobs, in `tx`.
   */
  async emit(tx: Tx, type: EventType, data: Record<string, unknown>, subject: EventSubject, now = new Date()): Promise<string[]> {
    const body = JSON.stringify({ type, timestamp: now.toISOString(), data });
    const messageId = newId('webhookMessage');
    const endpoints = await tx
      .select({ id: webhookEndpoints.id, url: webhookEndpoints.url })
      .from(webhookEndpoints)
      .where(
        and(
          eq(webhookEndpoints.workspaceId, subject.workspaceId),
          eq(webhookEndpoints.enabled, true),
          sql`(cardinality(${webhookEndpoints.events}) = 0 or ${type} = any(${webhookEndpoints.events}))`,
          subject.syncId
            ? sql`(cardinality(${webhookEndpoints.syncIds}) = 0 or ${subject.syncId} = any(${webhookEndpoints.syncIds}))`
            : subject.syncIds
              ? sql`(cardinality(${webhookEndpoints.syncIds}) = 0 or ${webhookEndpoints.syncIds} && array[${sql.join(subject.syncIds.map((id) => sql`${id}`), sql`, `)}]::text[])`
              : sql`true`,
        ),
      );
    const targets: { endpointId: string | null; url: string }[] = endpoints.map((e) => ({ endpointId: e.id, url: e.url }));
    if (type === 'run.completed' && subject.callbackUrl) targets.push({ endpointId: null, url: subject.callbackUrl });
    if (!targets.length) return [];
    const rows = targets.map((t) => ({
      id: newId('webhookDelivery'),
      workspaceId: subject.workspaceId,
      endpointId: t.endpointId,
      url: t.url,
      messageId,
      eventType: type,
      runId: subject.runId ?? null,
      body,
      status: 'pending',
    }));
    await tx.insert(webhookDeliveries).values(rows);
    for (const r of rows) await enqueueDelivery(tx, r);
    return rows.map((r) => r.id);
  }

  async deliveries(actor: Actor, endpointRef: string, params: { limit?: number; cursor?: string; status?: string; eventType?: string } = {}): Promise<Page<WebhookDeliveryViewT>> {
    requireScope(actor, 'read');
    const ep = await this.row(this.db, actor.workspaceId, endpointRef);
    const limit = pageLimit(params.limit);
    const after = decodeCursor(params.cursor);
    const conds = [eq(webhookDeliveries.endpointId, ep.id), eq(webhookDeliveries.workspaceId, actor.workspaceId)];
    if (after) conds.push(lt(webhookDeliveries.id, after));
    if (params.status) conds.push(eq(webhookDeliveries.status, params.status));
    if (params.eventType) conds.push(eq(webhookDeliveries.eventType, params.eventType));
    const rows = await this.db.select().from(webhookDeliveries).where(and(...conds)).orderBy(desc(webhookDeliveries.id)).limit(limit + 1);
    return toPage(rows, limit, deliveryView);
  }

  /** Every delivery about a run: its endpoints' and its callbackUrl's. */
  async runDeliveries(actor: Actor, runId: string, params: { limit?: number; cursor?: string } = {}): Promise<Page<WebhookDeliveryViewT>> {
    requireScope(actor, 'read');
    const limit = pageLimit(params.limit);
    const after = decodeCursor(params.cursor);
    const conds = [eq(webhookDeliveries.runId, runId), eq(webhookDeliveries.workspaceId, actor.workspaceId)];
    if (after) conds.push(lt(webhookDeliveries.id, after));
    const rows = await this.db.select().from(webhookDeliveries).where(and(...conds)).orderBy(desc(webhookDeliveries.id)).limit(limit + 1);
    return toPage(rows, limit, deliveryView);
  }

  async delivery(actor: Actor, endpointRef: string, id: string): Promise<WebhookDeliveryViewT> {
    requireScope(actor, 'read');
    const ep = await this.row(this.db, actor.workspaceId, endpointRef);
    const [row] = await this.db.select().from(webhookDeliveries).where(and(eq(webhookDeliveries.id, id), eq(webhookDeliveries.endpointId, ep.id)));
    if (!row) throw new NotFoundError('webhook delivery', id);
    return deliveryView(row);
  }

  /**
   * Sends a message again as a new delivery (same webhook-id and body, fresh attempts and retry
   * schedule), to the endpoint's current URL. The endpoint must be enabled.
   */
  async redeliver(actor: Actor, endpointRef: string, id: string): Promise<WebhookDeliveryViewT> {
    requireScope(actor, 'write');
    return this.db.transaction(async (tx) => {
      const ep = await this.row(tx, actor.workspaceId, endpointRef);
      const [orig] = await tx.select().from(webhookDeliveries).where(and(eq(webhookDeliveries.id, id), eq(webhookDeliveries.endpointId, ep.id)));
      if (!orig) throw new NotFoundError('webhook delivery', id);
      if (!ep.enabled) {
        throw new UnprocessableError('endpoint_disabled', `Webhook endpoint "${ep.slug}" is disabled${ep.disabledReason ? ` (${ep.disabledReason})` : ''}.`, {
          hint: 'Enable it (PATCH {"enabled": true}) and redeliver again.',
        });
      }
      const [row] = await tx
        .insert(webhookDeliveries)
        .values({
          id: newId('webhookDelivery'),
          workspaceId: actor.workspaceId,
          endpointId: ep.id,
          url: ep.url,
          messageId: orig.messageId,
          eventType: orig.eventType,
          runId: orig.runId,
          body: orig.body,
          status: 'pending',
          redeliveryOf: orig.id,
        })
        .returning();
      await enqueueDelivery(tx, row);
      await recordAudit(tx, actor, 'trigger', 'webhook_delivery', row.id);
      return deliveryView(row);
    });
  }
}

function callbackView(row: typeof callbackSecrets.$inferSelect | undefined): CallbackSecretViewT {
  if (!row) return { configured: false, rotatedAt: null, previousSecretExpiresAt: null };
  const prev = row.previousSecretExpiresAt && row.previousSecretExpiresAt.getTime() > Date.now() ? row.previousSecretExpiresAt : null;
  return { configured: true, rotatedAt: iso(row.updatedAt), previousSecretExpiresAt: iso(prev) };
}
