import { Type, type Static } from '@sinclair/typebox';
import { and, asc, eq, gt, sql } from 'drizzle-orm';
import { alertChannels, syncs } from '../db/schema.ts';
import type { Tx } from '../db/client.ts';
import { ConnectorError, UnprocessableError } from '../errors.ts';
import { newId } from '../lib/ids.ts';
import { assertValid } from '../lib/validate.ts';
import { SECRET_PATTERN } from '../lib/signing.ts';
import { recordAudit } from './audit.ts';
import type { Actor } from './context.ts';
import { changedFields, checkVersion, decodeCursor, isUniqueViolation, iso, pageLimit, requireScope, slugTaken, toPage, type Page } from './common.ts';
import { inUse, Name, PROTECTED_ENV, SecretEnvRef, Slug } from './connections.ts';
import type { ServiceDeps } from './deps.ts';
import { getByRef, putBySlug, type PutOptions } from './refs.ts';
import { acceptingReadOnly, readOnlyFields } from './read-only.ts';
import { withoutDefaults } from './defaults.ts';
import { checkWebhookUrl, WebhookUrl } from './webhooks.ts';
import { nextSecretMeta, requireResentSecrets, sameSecrets, SecretsView, secretsView, type SecretMeta } from './secret-meta.ts';

// Alert channels: where a sync's alerts go.
//   slack      secrets.webhookUrl (a Slack incoming webhook; it is a credential, so write-only)
//   pagerduty  secrets.routingKey; config.eventsUrl (default the public Events API v2), config.severity
//   webhook    config.url; secrets.signingSecret (whsec_…, optional: Standard Webhooks signature)
// Secrets are sealed at rest and never returned (secretNames lists which are set).

export const CHANNEL_TYPES = ['slack', 'pagerduty', 'webhook'] as const;
export type ChannelType = (typeof CHANNEL_TYPES)[number];
export const PAGERDUTY_EVENTS_URL = 'https://events.pagerduty.com/v2/enqueue';
const SEVERITIES = ['critical', 'error', 'warning', 'info'] as const;

const ChannelConfig = Type.Object(
  {
    eventsUrl: Type.Optional(Type.Unsafe<string>({ ...WebhookUrl, default: PAGERDUTY_EVENTS_URL, description: 'pagerduty: the Events API v2 URL' })),
    severity: Type.Optional(Type.Union(SEVERITIES.map((s) => Type.Literal(s)), { default: 'error', description: 'pagerduty: the severity of the events sent' })),
    url: Type.Optional(WebhookUrl),
  },
  { additionalProperties: false, description: 'pagerduty: eventsUrl (default the public Events API v2), severity (default error); webhook: url (required)' },
);
const ChannelSecrets = Type.Object(
  {
    webhookUrl: Type.Optional(Type.Union([WebhookUrl, SecretEnvRef])),
    routingKey: Type.Optional(Type.Union([Type.String({ minLength: 1, maxLength: 200 }), SecretEnvRef])),
    signingSecret: Type.Optional(Type.Union([Type.String({ pattern: SECRET_PATTERN }), SecretEnvRef])),
  },
  {
    additionalProperties: false,
    description:
      'slack: webhookUrl (required); pagerduty: routingKey (required); webhook: signingSecret (optional). Each a value or `{ "env": NAME }`, a variable of Backhaul\'s environment read when an alert is sent (a bundle can name it without holding the value)',
  },
);
const ChannelTypeT = Type.Union(CHANNEL_TYPES.map((t) => Type.Literal(t)));

export const AlertChannelCreate = Type.Object(
  { slug: Slug, name: Name, type: ChannelTypeT, config: Type.Optional(ChannelConfig), secrets: Type.Optional(ChannelSecrets) },
  { additionalProperties: false, $id: 'AlertChannelCreate' },
);
const AlertChannelPutBase = Type.Object(
  { slug: Type.Optional(Slug), name: Name, type: ChannelTypeT, config: Type.Optional(ChannelConfig), secrets: Type.Optional(ChannelSecrets) },
  { additionalProperties: false, description: 'secrets, when absent, keep their current values' },
);
export const AlertChannelPatch = withoutDefaults(Type.Object(
  { slug: Type.Optional(Slug), name: Type.Optional(Name), config: Type.Optional(ChannelConfig), secrets: Type.Optional(ChannelSecrets) },
  { additionalProperties: false, $id: 'AlertChannelPatch', description: 'config and secrets are merged field by field' },
));
export const AlertChannelView = Type.Object(
  {
    id: Type.String(),
    slug: Type.String(),
    name: Type.String(),
    type: ChannelTypeT,
    config: Type.Object({}, { additionalProperties: true }),
    secretNames: Type.Array(Type.String()),
    secretFingerprints: SecretsView,
    createdAt: Type.String({ format: 'date-time' }),
    updatedAt: Type.String({ format: 'date-time' }),
    version: Type.Integer(),
  },
  { $id: 'AlertChannel' },
);
export const ChannelTestResult = Type.Object(
  {
    ok: Type.Boolean(),
    latencyMs: Type.Optional(Type.Integer()),
    statusCode: Type.Optional(Type.Integer()),
    error: Type.Optional(Type.Object({ code: Type.String(), message: Type.String(), hint: Type.Optional(Type.String()) })),
  },
  { $id: 'AlertChannelTestResult' },
);

export type AlertChannelCreateInput = Static<typeof AlertChannelCreate>;
export const AlertChannelPut = acceptingReadOnly(AlertChannelPutBase, AlertChannelView, { $id: 'AlertChannelPut' });
export type AlertChannelPutInput = Static<typeof AlertChannelPutBase>;
export type AlertChannelPatchInput = Static<typeof AlertChannelPatch>;
export type AlertChannelViewT = Static<typeof AlertChannelView>;
export type ChannelTestResultT = Static<typeof ChannelTestResult>;
export type AlertChannelRow = typeof alertChannels.$inferSelect;
/** A channel's secrets, resolved: the values sent with (or used to sign) an alert. */
export interface ChannelSecretsT {
  webhookUrl?: string;
  routingKey?: string;
  signingSecret?: string;
}
/** A channel's secrets as stored: values, or `{ env }` references resolved when used. */
export type StoredChannelSecrets = { [K in keyof ChannelSecretsT]?: string | { env: string } };
export interface ChannelConfigT {
  eventsUrl?: string;
  severity?: (typeof SEVERITIES)[number];
  url?: string;
}

export function channelView(r: AlertChannelRow): AlertChannelViewT {
  return {
    id: r.id,
    slug: r.slug,
    name: r.name,
    type: r.type as ChannelType,
    config: r.config as Record<string, unknown>,
    secretNames: [...r.secretNames].sort(),
    secretFingerprints: secretsView(r.secretNames, r.secretMeta as SecretMeta),
    createdAt: iso(r.createdAt)!,
    updatedAt: iso(r.updatedAt)!,
    version: r.version,
  };
}

export class AlertChannelService {
  private readonly deps: ServiceDeps;
  /** Timeout of alert requests (the notifier sets it from config). */
  timeoutMs = 10_000;
  /**
   * Sends a channel's test message; set by the notifier (src/notify), which owns outbound
   * channel traffic (the domain does not import it: no import circle).
   */
  tester?: (row: AlertChannelRow, secrets: ChannelSecretsT, opts: { timeoutMs: number; denyPrivateNetworks: boolean }) => Promise<ChannelTestResultT>;
  constructor(deps: ServiceDeps) {
    this.deps = deps;
  }

  private get db() {
    return this.deps.database.db;
  }

  /** A channel's whole settings must make sense for its type (422 naming the field otherwise). */
  private check(type: ChannelType, config: ChannelConfigT, secrets: StoredChannelSecrets): { config: ChannelConfigT } {
    const errors: { path: string; message: string }[] = [];
    const allowed: Record<ChannelType, { config: string[]; secrets: string[]; required: string[] }> = {
      slack: { config: [], secrets: ['webhookUrl'], required: ['/secrets/webhookUrl'] },
      pagerduty: { config: ['eventsUrl', 'severity'], secrets: ['routingKey'], required: ['/secrets/routingKey'] },
      webhook: { config: ['url'], secrets: ['signingSecret'], required: ['/config/url'] },
    };
    const a = allowed[type];
    for (const k of Object.keys(config)) if (!a.config.includes(k)) errors.push({ path: `/config/${k}`, message: `is not a setting of ${type} channels` });
    for (const k of Object.keys(secrets)) if (!a.secrets.includes(k)) errors.push({ path: `/secrets/${k}`, message: `is not a secret of ${type} channels` });
    for (const [k, v] of Object.entries(secrets)) {
      if (typeof v === 'object' && PROTECTED_ENV.has(v.env)) errors.push({ path: `/secrets/${k}/env`, message: `may not refer to ${v.env}, which holds Backhaul's own credentials` });
    }
    for (const p of a.required) {
      const [, where, k] = p.split('/');
      if ((where === 'config' ? (config as Record<string, unknown>)[k] : (secrets as Record<string, unknown>)[k]) === undefined) errors.push({ path: p, message: 'is required' });
    }
    if (errors.length) throw new UnprocessableError('invalid_channel', `The ${type} channel settings are invalid: ${errors.map((e) => `${e.path} ${e.message}`).join('; ')}`, { errors });
    for (const [path, url] of [
      ['/config/url', config.url],
      ['/config/eventsUrl', config.eventsUrl],
      ['/secrets/webhookUrl', secrets.webhookUrl],
    ] as const) {
      // A `{ env }` URL is checked when an alert is sent (its value is not known before).
      if (typeof url === 'string' && url) checkWebhookUrl(url, this.deps.denyPrivateNetworks, path);
    }
    return { config: type === 'pagerduty' ? { eventsUrl: PAGERDUTY_EVENTS_URL, severity: 'error', ...config } : config };
  }

  async list(actor: Actor, params: { limit?: number; cursor?: string } = {}): Promise<Page<AlertChannelViewT>> {
    requireScope(actor, 'read');
    const limit = pageLimit(params.limit);
    const after = decodeCursor(params.cursor);
    const conds = [eq(alertChannels.workspaceId, actor.workspaceId)];
    if (after) conds.push(gt(alertChannels.id, after));
    const rows = await this.db.select().from(alertChannels).where(and(...conds)).orderBy(asc(alertChannels.id)).limit(limit + 1);
    return toPage(rows, limit, channelView);
  }

  async get(actor: Actor, ref: string): Promise<AlertChannelViewT> {
    requireScope(actor, 'read');
    return channelView(await this.row(this.db, actor.workspaceId, ref));
  }

  row(tx: Tx, workspaceId: string, ref: string, opts: { forUpdate?: boolean } = {}): Promise<AlertChannelRow> {
    return getByRef(tx, alertChannels, 'alert channel', workspaceId, ref, opts);
  }

  /** The stored secrets, opened (`{ env }` references as references). */
  storedSecretsOf(row: AlertChannelRow): StoredChannelSecrets {
    return row.secretsSealed ? (this.deps.secrets.open(row.secretsSealed) as StoredChannelSecrets) : {};
  }

  /**
   * The secrets to send an alert with: `{ env }` references read from Backhaul's environment.
   * @throws ConnectorError (fatal) `secret_env_missing` when the variable is unset,
   *   `secret_env_refused` when it holds Backhaul's own credentials; a `{ env }` webhookUrl that is
   *   not an allowed URL is refused like a stored one.
   */
  secretsOf(row: AlertChannelRow): ChannelSecretsT {
    const out: ChannelSecretsT = {};
    for (const [k, v] of Object.entries(this.storedSecretsOf(row)) as [keyof ChannelSecretsT, string | { env: string }][]) {
      if (typeof v === 'string') {
        out[k] = v;
        continue;
      }
      if (PROTECTED_ENV.has(v.env)) {
        throw new ConnectorError('secret_env_refused', `Secret "${k}" of alert channel "${row.slug}" refers to ${v.env}, which holds Backhaul's own credentials.`, { classification: 'fatal' });
      }
      const value = this.deps.env[v.env];
      if (value === undefined) {
        throw new ConnectorError('secret_env_missing', `Secret "${k}" of alert channel "${row.slug}" refers to environment variable ${v.env}, which is not set.`, {
          classification: 'fatal',
          hint: `Set ${v.env} in Backhaul's environment, or send the secret's value instead.`,
        });
      }
      if (k === 'webhookUrl') checkWebhookUrl(value, this.deps.denyPrivateNetworks, '/secrets/webhookUrl');
      out[k] = value;
    }
    return out;
  }

  async create(actor: Actor, input: AlertChannelCreateInput, tx: Tx = this.db): Promise<AlertChannelViewT> {
    requireScope(actor, 'write');
    assertValid(AlertChannelCreate, input);
    const secrets = input.secrets ?? {};
    const { config } = this.check(input.type, input.config ?? {}, secrets);
    const id = newId('alertChannel');
    const now = new Date();
    try {
      const row = await tx.transaction(async (tx2) => {
        const [r] = await tx2
          .insert(alertChannels)
          .values({
            id,
            workspaceId: actor.workspaceId,
            slug: input.slug,
            name: input.name,
            type: input.type,
            config,
            secretsSealed: Object.keys(secrets).length ? this.deps.secrets.seal(secrets as Record<string, unknown>) : null,
            secretNames: Object.keys(secrets),
            secretMeta: nextSecretMeta(this.deps.secrets, id, { values: {}, meta: {}, since: now }, secrets as Record<string, unknown>, now),
            createdAt: now,
            updatedAt: now,
          })
          .returning();
        await recordAudit(tx2, actor, 'create', 'alert_channel', id, ['slug', 'name', 'type', 'config', ...(Object.keys(secrets).length ? ['secrets'] : [])]);
        return r;
      });
      return channelView(row);
    } catch (e) {
      if (isUniqueViolation(e, 'alert_channels_slug_uq')) throw slugTaken('alert channel', input.slug);
      throw e;
    }
  }

  async update(actor: Actor, ref: string, input: AlertChannelPatchInput, ifMatch?: string): Promise<AlertChannelViewT> {
    requireScope(actor, 'write');
    assertValid(AlertChannelPatch, input);
    return this.db.transaction(async (tx) => {
      const cur = await this.row(tx, actor.workspaceId, ref, { forUpdate: true });
      checkVersion(ifMatch, cur.version);
      const config = { ...(cur.config as ChannelConfigT), ...input.config };
      const secrets = { ...this.storedSecretsOf(cur), ...input.secrets };
      const resent = new Set(Object.keys(input.secrets ?? {}));
      const kept = Object.keys(secrets).filter((k) => !resent.has(k));
      return this.save(tx, actor, cur, { slug: input.slug ?? cur.slug, name: input.name ?? cur.name, type: cur.type as ChannelType, config, secrets }, kept, 'update');
    });
  }

  /** PUT; with `keepUnsentSecrets`, `secrets` set the names they carry and keep the others (see ConnectionService.put). */
  async put(actor: Actor, ref: string, input: AlertChannelPutInput, ifMatch?: string, opts: PutOptions & { keepUnsentSecrets?: boolean } = {}): Promise<{ created: boolean; value: AlertChannelViewT }> {
    requireScope(actor, 'write');
    assertValid(AlertChannelPut, input);
    return (opts.tx ?? this.db).transaction(async (tx) => {
      const r = await putBySlug(tx, alertChannels, actor.workspaceId, ref, input, ifMatch, (slug) => this.create(actor, { ...input, slug }, tx), async () => {
        const cur = await this.row(tx, actor.workspaceId, ref, { forUpdate: true });
        checkVersion(ifMatch, cur.version);
        const stored = input.type === cur.type ? this.storedSecretsOf(cur) : {};
        const secrets = input.secrets === undefined ? stored : opts.keepUnsentSecrets ? { ...stored, ...input.secrets } : input.secrets;
        const kept = Object.keys(secrets).filter((k) => !(input.secrets && k in input.secrets));
        const value = await this.save(tx, actor, cur, { slug: input.slug ?? cur.slug, name: input.name, type: input.type, config: input.config ?? {}, secrets }, kept, 'replace');
        return value;
      }, { ...opts, readOnly: { view: channelView, fields: readOnlyFields(AlertChannelPutBase, AlertChannelView) } });
      return { created: r.created, value: r.value };
    });
  }

  private async save(
    tx: Tx,
    actor: Actor,
    cur: AlertChannelRow,
    next: { slug: string; name: string; type: ChannelType; config: ChannelConfigT; secrets: StoredChannelSecrets },
    kept: string[],
    action: 'update' | 'replace',
  ): Promise<AlertChannelViewT> {
    const { config } = this.check(next.type, next.config, next.secrets);
    // PagerDuty's routing key is sent to eventsUrl (a Slack URL is itself the secret; a webhook
    // channel's signing secret never leaves Backhaul, only signatures made with it do).
    const targets = (['eventsUrl'] as const).filter((k) => (cur.config as ChannelConfigT)[k] !== config[k]).map((k) => `/config/${k}`);
    requireResentSecrets('alert channel', cur.slug, targets, kept);
    const changed = changedFields(cur as unknown as Record<string, unknown>, { ...next, config }, ['slug', 'name', 'type', 'config']);
    const before = this.storedSecretsOf(cur) as Record<string, unknown>;
    const secretsChanged = !sameSecrets(before, next.secrets as Record<string, unknown>);
    if (secretsChanged) changed.push('secrets');
    if (!changed.length) return channelView(cur);
    const now = new Date();
    try {
      const [row] = await tx
        .update(alertChannels)
        .set({
          slug: next.slug,
          name: next.name,
          type: next.type,
          config,
          ...(secretsChanged
            ? {
                secretsSealed: Object.keys(next.secrets).length ? this.deps.secrets.seal(next.secrets as Record<string, unknown>) : null,
                secretNames: Object.keys(next.secrets),
                secretMeta: nextSecretMeta(this.deps.secrets, cur.id, { values: before, meta: cur.secretMeta as SecretMeta, since: cur.updatedAt }, next.secrets as Record<string, unknown>, now),
              }
            : {}),
          version: cur.version + 1,
          updatedAt: now,
        })
        .where(eq(alertChannels.id, cur.id))
        .returning();
      await recordAudit(tx, actor, action, 'alert_channel', cur.id, changed);
      return channelView(row);
    } catch (e) {
      if (isUniqueViolation(e, 'alert_channels_slug_uq')) throw slugTaken('alert channel', next.slug);
      throw e;
    }
  }

  /** A channel named in a sync's alert rules cannot be deleted (409 naming the syncs). */
  async delete(actor: Actor, ref: string, ifMatch?: string, outer: Tx = this.db): Promise<void> {
    requireScope(actor, 'write');
    await outer.transaction(async (tx) => {
      const cur = await this.row(tx, actor.workspaceId, ref, { forUpdate: true });
      checkVersion(ifMatch, cur.version);
      const used = await tx
        .select({ id: syncs.id, slug: syncs.slug })
        .from(syncs)
        .where(and(eq(syncs.workspaceId, actor.workspaceId), sql`(${syncs.alerts} -> 'channelIds') ?| array[${cur.id}::text, ${cur.slug}::text]`))
        .limit(20);
      if (used.length) throw inUse('alert channel', cur.slug, used.map((d) => ({ type: 'sync', ...d })));
      await tx.delete(alertChannels).where(eq(alertChannels.id, cur.id));
      await recordAudit(tx, actor, 'delete', 'alert_channel', cur.id);
    });
  }

  /** Fills the secret fingerprints of channels stored before fingerprints existed (start-up; no version bump). */
  async backfillSecretMeta(): Promise<number> {
    const rows = await this.db.select().from(alertChannels).where(sql`cardinality(${alertChannels.secretNames}) > 0 and ${alertChannels.secretMeta} = '{}'::jsonb`);
    for (const r of rows) {
      const values = this.storedSecretsOf(r) as Record<string, unknown>;
      const meta = nextSecretMeta(this.deps.secrets, r.id, { values, meta: {}, since: r.updatedAt }, values, r.updatedAt);
      await this.db.update(alertChannels).set({ secretMeta: meta }).where(and(eq(alertChannels.id, r.id), eq(alertChannels.secretMeta, {})));
    }
    return rows.length;
  }

  async test(actor: Actor, ref: string): Promise<ChannelTestResultT> {
    requireScope(actor, 'write');
    const row = await this.row(this.db, actor.workspaceId, ref);
    if (!this.tester) throw new Error('alert channel tester not configured');
    let secrets: ChannelSecretsT;
    try {
      secrets = this.secretsOf(row);
    } catch (e) {
      // A `{ env }` secret that cannot be read: the channel as configured is at fault, not the server.
      if (e instanceof ConnectorError && (e.code === 'secret_env_missing' || e.code === 'secret_env_refused')) throw new UnprocessableError(e.code, e.message, { hint: e.hint });
      throw e;
    }
    return this.tester(row, secrets, { timeoutMs: this.timeoutMs, denyPrivateNetworks: this.deps.denyPrivateNetworks });
  }
}
