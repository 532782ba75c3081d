import { Type, type Static } from '@sinclair/typebox';
import { and, eq, sql } from 'drizzle-orm';
import { connections, models, syncs } from '../db/schema.ts';
import type { Tx } from '../db/client.ts';
import { getConnectorType, listConnectorTypes } from '../connectors/registry.ts';
import type { ConnectionTestReport, ConnectionWarning, ConnectorContext, ConnectorRole, ConnectorType, DestinationConnector, ResolvedSecrets, SourceConnector } from '../connectors/types.ts';
import { OAuthTokenManager, OAUTH_SECRET } from '../connectors/oauth/token-manager.ts';
import { DEFAULT_OAUTH_TRANSPORT, resolveOAuthClient } from '../connectors/oauth/protocol.ts';
import { PgOAuthTokenStore } from './oauth-store.ts';
import { ConflictError, ConnectorError, UnprocessableError, ValidationError } from '../errors.ts';
import { newId } from '../lib/ids.ts';
import { assertValid, validateConnectorConfig } from '../lib/validate.ts';
import { recordAudit } from './audit.ts';
import type { Actor } from './context.ts';
import {
  changedFields,
  checkVersion,
  isUniqueViolation,
  iso,
  mergePatch,
  requireScope,
  sameJson,
  SLUG_PATTERN,
  slugTaken,
  type Page,
} from './common.ts';
import type { ServiceDeps } from './deps.ts';
import { getByRef, putBySlug, type PutOptions } from './refs.ts';
import { acceptingReadOnly, readOnlyFields } from './read-only.ts';
import { listOrdered, type ListOptions } from './list.ts';
import { nextSecretMeta, requireResentSecrets, sameSecrets, SecretsView, secretsView, type SecretMeta } from './secret-meta.ts';
import { secretRedactor, type Redactor } from '../lib/redact.ts';

// Connections: configured connector instances. `secrets` are write-only: sealed with
// AES-256-GCM before they touch the database, opened only to talk to the remote system.

export const Slug = Type.String({ pattern: SLUG_PATTERN, maxLength: 63, description: 'Unique in the workspace; lowercase letters, digits and dashes' });
export const Name = Type.String({ minLength: 1, maxLength: 200 });
/** A secret named by reference: `{ "env": NAME }`, a variable of Backhaul's environment read when the secret is used. */
export const SecretEnvRef = Type.Object({ env: Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$', maxLength: 200 }) }, { additionalProperties: false });
const SecretValue = Type.Union([Type.String({ maxLength: 16_384 }), SecretEnvRef]);

export const ConnectionCreate = Type.Object(
  {
    slug: Slug,
    name: Name,
    type: Type.String({ minLength: 1, maxLength: 100 }),
    config: Type.Object({}, { additionalProperties: true }),
    secrets: Type.Optional(Type.Record(Type.String({ maxLength: 100 }), SecretValue)),
  },
  { additionalProperties: false, $id: 'ConnectionCreate' },
);
export const ConnectionPatch = Type.Object(
  {
    slug: Type.Optional(Slug),
    name: Type.Optional(Name),
    config: Type.Optional(Type.Object({}, { additionalProperties: true, description: 'JSON merge patch (RFC 7396) over the current config' })),
    secrets: Type.Optional(
      Type.Record(Type.String({ maxLength: 100 }), Type.Union([SecretValue, Type.Null()]), { description: 'Set or (with null) remove individual secrets' }),
    ),
  },
  { additionalProperties: false, $id: 'ConnectionPatch' },
);
const ConnectionPutBase = Type.Object(
  {
    slug: Type.Optional(Slug),
    name: Name,
    type: Type.String({ minLength: 1, maxLength: 100 }),
    config: Type.Object({}, { additionalProperties: true }),
    secrets: Type.Optional(
      Type.Record(Type.String({ maxLength: 100 }), SecretValue, { description: 'Replaces the whole set; omit to keep the current secrets' }),
    ),
  },
  { additionalProperties: false },
);
export const ConnectionView = Type.Object(
  {
    id: Type.String(),
    slug: Type.String(),
    name: Type.String(),
    type: Type.String(),
    roles: Type.Array(Type.Union([Type.Literal('source'), Type.Literal('destination')])),
    config: Type.Object({}, { additionalProperties: true }),
    secretNames: Type.Array(Type.String()),
    secretFingerprints: SecretsView,
    authStatus: Type.Optional(
      Type.Union([Type.Literal('connected'), Type.Literal('not_connected'), Type.Literal('reauthorization_required')], {
        description: 'Types with OAuth: whether the connection holds credentials, or its OAuth grant was revoked/expired and it must be connected again',
      }),
    ),
    authError: Type.Optional(Type.String({ description: "With authStatus reauthorization_required: the provider's answer" })),
    createdAt: Type.String({ format: 'date-time' }),
    updatedAt: Type.String({ format: 'date-time' }),
    version: Type.Integer(),
  },
  { $id: 'Connection' },
);

export type ConnectionCreateInput = Static<typeof ConnectionCreate>;
export type ConnectionPatchInput = Static<typeof ConnectionPatch>;
export const ConnectionPut = acceptingReadOnly(ConnectionPutBase, ConnectionView, { $id: 'ConnectionPut' });
export type ConnectionPutInput = Static<typeof ConnectionPutBase>;
export type ConnectionViewT = Static<typeof ConnectionView>;
type Row = typeof connections.$inferSelect;

/** Types with OAuth only: connected (holds a token), not_connected, or reauthorization_required. */
function authStatusOf(r: Row): Pick<ConnectionViewT, 'authStatus' | 'authError'> {
  if (!getConnectorType(r.type)?.oauth) return {};
  if (r.authStatus === 'reauthorization_required') return { authStatus: 'reauthorization_required', ...(r.authError ? { authError: r.authError } : {}) };
  const has = r.secretNames.includes(OAUTH_SECRET.refreshToken) || r.secretNames.includes(OAUTH_SECRET.accessToken);
  return { authStatus: has ? 'connected' : 'not_connected' };
}

export function connectionView(r: Row): ConnectionViewT {
  return {
    id: r.id,
    slug: r.slug,
    name: r.name,
    type: r.type,
    roles: getConnectorType(r.type)?.roles ?? [],
    config: r.config as Record<string, unknown>,
    secretNames: [...r.secretNames].sort(),
    secretFingerprints: secretsView(r.secretNames, r.secretMeta as SecretMeta),
    ...authStatusOf(r),
    createdAt: iso(r.createdAt)!,
    updatedAt: iso(r.updatedAt)!,
    version: r.version,
  };
}

function connectorTypeOf(type: string): ConnectorType {
  const t = getConnectorType(type);
  if (!t) {
    const known = listConnectorTypes().map((c) => c.type).join(', ');
    throw new ValidationError(`Unknown connector type "${type}". Known types: ${known}.`, [{ path: '/type', message: `must be one of: ${known}` }], 'unknown_connector_type');
  }
  return t;
}

/**
 * Environment variables that hold Backhaul's own credentials: a `{ env }` secret may not name
 * them, or a write key could send the encryption key to a server of its choosing.
 */
export const PROTECTED_ENV = new Set(['DATABASE_URL', 'BACKHAUL_ENCRYPTION_KEY', 'BACKHAUL_BOOTSTRAP_API_KEY', 'BACKHAUL_METRICS_TOKEN']);

function checkSecretNames(t: ConnectorType, secrets: Record<string, unknown>): void {
  const allowed = new Set(t.secrets.map((s) => s.name));
  const errors = Object.keys(secrets)
    .filter((k) => !allowed.has(k))
    .map((k) => ({ path: `/secrets/${k}`, message: `is not a secret of type "${t.type}" (known: ${[...allowed].join(', ') || 'none'})` }));
  for (const [k, v] of Object.entries(secrets)) {
    const env = v && typeof v === 'object' ? (v as { env?: unknown }).env : undefined;
    if (typeof env === 'string' && PROTECTED_ENV.has(env)) errors.push({ path: `/secrets/${k}/env`, message: `may not refer to ${env}, which holds Backhaul's own credentials` });
  }
  if (errors.length) throw new ValidationError(errors.map((e) => `${e.path} ${e.message}`).join('; '), errors);
}

const targetCache = new WeakMap<ConnectorType, string[]>();

/** JSON pointers into config that decide where a type's secrets are sent (declared, plus every `format: "uri"` property). */
export function secretTargetsOf(t: ConnectorType): string[] {
  let out = targetCache.get(t);
  if (!out) {
    const found = new Set(t.secretTargets ?? []);
    const walk = (schema: unknown, path: string) => {
      const s = schema as { format?: string; properties?: Record<string, unknown> } | undefined;
      if (!s || typeof s !== 'object') return;
      if (s.format === 'uri') found.add(path);
      for (const [k, sub] of Object.entries(s.properties ?? {})) walk(sub, `${path}/${k.replace(/~/g, '~0').replace(/\//g, '~1')}`);
    };
    walk(t.configSchema, '');
    targetCache.set(t, (out = [...found].sort()));
  }
  return out;
}

function at(doc: unknown, pointer: string): unknown {
  let cur = doc;
  for (const raw of pointer.split('/').slice(1)) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[raw.replace(/~1/g, '/').replace(/~0/g, '~')];
  }
  return cur;
}

/** The `/config/…` paths among a type's secret targets whose value differs between two configs. */
function changedTargets(t: ConnectorType, before: unknown, after: unknown): string[] {
  return secretTargetsOf(t)
    .filter((p) => !sameJson(at(before, p) ?? null, at(after, p) ?? null))
    .map((p) => `/config${p}`);
}

export class ConnectionService {
  private readonly deps: ServiceDeps;
  /** OAuth access tokens of this process's connections (one refresh per connection across processes). */
  readonly tokens: OAuthTokenManager;
  constructor(deps: ServiceDeps) {
    this.deps = deps;
    this.tokens = new OAuthTokenManager(new PgOAuthTokenStore(deps), { transport: { ...DEFAULT_OAUTH_TRANSPORT, denyPrivateNetworks: deps.denyPrivateNetworks } });
  }

  private get db() {
    return this.deps.database.db;
  }

  async list(actor: Actor, params: ListOptions & { type?: string } = {}): Promise<Page<ConnectionViewT>> {
    requireScope(actor, 'read');
    return listOrdered(this.db, connections, actor.workspaceId, [params.type ? eq(connections.type, params.type) : undefined], params, connectionView);
  }

  async get(actor: Actor, ref: string): Promise<ConnectionViewT> {
    requireScope(actor, 'read');
    return connectionView(await getByRef(this.db, connections, 'connection', actor.workspaceId, ref));
  }

  /** The stored row, for other services (models, syncs, engine). */
  async row(tx: Tx, workspaceId: string, ref: string): Promise<Row> {
    return getByRef(tx, connections, 'connection', workspaceId, ref);
  }

  async create(actor: Actor, input: ConnectionCreateInput, tx: Tx = this.db): Promise<ConnectionViewT> {
    requireScope(actor, 'write');
    assertValid(ConnectionCreate, input);
    const t = connectorTypeOf(input.type);
    const config = validateConnectorConfig(t.configSchema, input.config);
    const secrets = input.secrets ?? {};
    checkSecretNames(t, secrets);
    const id = newId('connection');
    const now = new Date();
    try {
      const [row] = await tx.transaction(async (tx2) => {
        const inserted = await tx2
          .insert(connections)
          .values({
            id,
            workspaceId: actor.workspaceId,
            slug: input.slug,
            name: input.name,
            type: input.type,
            config,
            secretsSealed: Object.keys(secrets).length ? this.deps.secrets.seal(secrets) : null,
            secretNames: Object.keys(secrets),
            secretMeta: nextSecretMeta(this.deps.secrets, id, { values: {}, meta: {}, since: now }, secrets, now),
            createdAt: now,
            updatedAt: now,
          })
          .returning();
        await recordAudit(tx2, actor, 'create', 'connection', id, ['slug', 'name', 'type', 'config', ...(Object.keys(secrets).length ? ['secrets'] : [])]);
        return inserted;
      });
      return connectionView(row);
    } catch (e) {
      if (isUniqueViolation(e, 'connections_slug_uq')) throw slugTaken('connection', input.slug);
      throw e;
    }
  }

  async update(actor: Actor, ref: string, input: ConnectionPatchInput, ifMatch?: string): Promise<ConnectionViewT> {
    requireScope(actor, 'write');
    assertValid(ConnectionPatch, input);
    try {
      return await this.db.transaction(async (tx) => {
        const cur = await getByRef(tx, connections, 'connection', actor.workspaceId, ref, { forUpdate: true });
        checkVersion(ifMatch, cur.version);
        const t = connectorTypeOf(cur.type);
        const config = input.config === undefined ? (cur.config as Record<string, unknown>) : validateConnectorConfig(t.configSchema, mergePatch(cur.config, input.config));
        const before = this.storedSecrets(cur);
        const after: Record<string, unknown> = { ...before };
        for (const [k, v] of Object.entries(input.secrets ?? {})) {
          if (v === null) delete after[k];
          else after[k] = v;
        }
        if (input.secrets !== undefined) checkSecretNames(t, after);
        const resent = new Set(Object.entries(input.secrets ?? {}).filter(([, v]) => v !== null).map(([k]) => k));
        requireResentSecrets('connection', cur.slug, changedTargets(t, cur.config, config), Object.keys(after).filter((k) => !resent.has(k)));
        const next = { slug: input.slug ?? cur.slug, name: input.name ?? cur.name, config };
        const changed = changedFields(cur as unknown as Record<string, unknown>, next, ['slug', 'name', 'config']);
        const secretsChanged = !sameSecrets(before, after);
        if (secretsChanged) changed.push('secrets');
        if (changed.length === 0) return connectionView(cur);
        const [row] = await tx
          .update(connections)
          .set({ ...next, ...this.secretColumns(cur, before, after, secretsChanged), ...newCredentials(input.secrets !== undefined), version: cur.version + 1, updatedAt: new Date() })
          .where(eq(connections.id, cur.id))
          .returning();
        if (input.secrets !== undefined) this.tokens.forget(cur.id);
        await recordAudit(tx, actor, 'update', 'connection', cur.id, changed);
        return connectionView(row);
      });
    } catch (e) {
      if (isUniqueViolation(e, 'connections_slug_uq')) throw slugTaken('connection', input.slug ?? ref);
      throw e;
    }
  }

  /**
   * PUT: replace the whole resource, or create it when `ref` is a slug that does not exist yet.
   * With `keepUnsentSecrets`, `secrets` set the names they carry and keep the others (a
   * declarative bundle manages only the secrets it names); changing where secrets are sent still
   * needs every kept one sent again (422 secrets_required).
   */
  async put(actor: Actor, ref: string, input: ConnectionPutInput, ifMatch?: string, opts: PutOptions & { keepUnsentSecrets?: boolean } = {}): Promise<{ created: boolean; connection: ConnectionViewT }> {
    requireScope(actor, 'write');
    assertValid(ConnectionPut, input);
    return (opts.tx ?? this.db).transaction(async (tx) => {
      const r = await putBySlug(tx, connections, actor.workspaceId, ref, input, ifMatch, (slug) => this.create(actor, { ...input, slug }, tx), () => this.replace(tx, actor, ref, input, ifMatch, opts.keepUnsentSecrets ?? false), {
        ...opts,
        readOnly: { view: connectionView, fields: readOnlyFields(ConnectionPutBase, ConnectionView) },
      });
      return { created: r.created, connection: r.value };
    });
  }

  private async replace(tx: Tx, actor: Actor, ref: string, input: ConnectionPutInput, ifMatch: string | undefined, keepUnsent: boolean): Promise<ConnectionViewT> {
    const row = await getByRef(tx, connections, 'connection', actor.workspaceId, ref, { forUpdate: true });
    checkVersion(ifMatch, row.version);
    if (input.type !== row.type) {
      throw new UnprocessableError('immutable_field', `A connection's type cannot change (it is "${row.type}"). Create a new connection instead.`, {
        errors: [{ path: '/type', message: 'cannot change' }],
      });
    }
    const t = connectorTypeOf(row.type);
    const config = validateConnectorConfig(t.configSchema, input.config);
    const before = this.storedSecrets(row);
    const after: Record<string, unknown> = input.secrets === undefined ? before : keepUnsent ? { ...before, ...input.secrets } : input.secrets;
    if (input.secrets !== undefined) checkSecretNames(t, input.secrets);
    const sent = new Set(Object.keys(input.secrets ?? {}));
    requireResentSecrets('connection', row.slug, changedTargets(t, row.config, config), Object.keys(after).filter((k) => !sent.has(k)));
    const next = { slug: input.slug ?? row.slug, name: input.name, config };
    const changed = changedFields(row as unknown as Record<string, unknown>, next, ['slug', 'name', 'config']);
    const secretsChanged = !sameSecrets(before, after);
    if (secretsChanged) changed.push('secrets');
    if (changed.length === 0) return connectionView(row);
    try {
      const [updated] = await tx
        .update(connections)
        .set({ ...next, ...this.secretColumns(row, before, after, secretsChanged), ...newCredentials(input.secrets !== undefined), version: row.version + 1, updatedAt: new Date() })
        .where(eq(connections.id, row.id))
        .returning();
      if (input.secrets !== undefined) this.tokens.forget(row.id);
      await recordAudit(tx, actor, 'replace', 'connection', row.id, changed);
      return connectionView(updated);
    } catch (e) {
      if (isUniqueViolation(e, 'connections_slug_uq')) throw slugTaken('connection', next.slug);
      throw e;
    }
  }

  async delete(actor: Actor, ref: string, ifMatch?: string, outer: Tx = this.db): Promise<void> {
    requireScope(actor, 'write');
    await outer.transaction(async (tx) => {
      const cur = await getByRef(tx, connections, 'connection', actor.workspaceId, ref, { forUpdate: true });
      checkVersion(ifMatch, cur.version);
      const usedByModels = await tx.select({ id: models.id, slug: models.slug }).from(models).where(eq(models.connectionId, cur.id)).limit(20);
      const usedBySyncs = await tx.select({ id: syncs.id, slug: syncs.slug }).from(syncs).where(eq(syncs.destinationId, cur.id)).limit(20);
      const dependents = [...usedByModels.map((d) => ({ type: 'model', ...d })), ...usedBySyncs.map((d) => ({ type: 'sync', ...d }))];
      if (dependents.length) throw inUse('connection', cur.slug, dependents);
      await tx.delete(connections).where(eq(connections.id, cur.id));
      await recordAudit(tx, actor, 'delete', 'connection', cur.id);
    });
  }

  /** Reaches the remote system; failures are reported in the body (200), not as HTTP errors. */
  async test(actor: Actor, ref: string): Promise<{ ok: boolean; latencyMs?: number; warnings?: ConnectionWarning[]; error?: { code: string; message: string; hint?: string } }> {
    requireScope(actor, 'read');
    const row = await this.row(this.db, actor.workspaceId, ref);
    const started = performance.now();
    let report: ConnectionTestReport | undefined;
    try {
      const t = connectorTypeOf(row.type);
      const conn = t.roles.includes('source') && t.openSource ? this.openSource(row) : this.openDestination(row);
      try {
        report = (await conn.test()) ?? undefined;
      } finally {
        await conn.close();
      }
      return { ok: true, latencyMs: Math.round(performance.now() - started), ...(report?.warnings?.length ? { warnings: report.warnings } : {}) };
    } catch (e) {
      if (e instanceof ConnectorError) {
        // A remote system may quote the credentials it was sent.
        const r = this.redactorFor(row);
        return { ok: false, error: { code: e.code, message: r.text(e.message), ...(e.hint ? { hint: r.text(e.hint) } : {}) } };
      }
      throw e;
    }
  }

  async objects(actor: Actor, ref: string) {
    requireScope(actor, 'read');
    const row = await this.row(this.db, actor.workspaceId, ref);
    const dest = this.openDestination(row);
    try {
      return await dest.objects();
    } finally {
      await dest.close();
    }
  }

  async fields(actor: Actor, ref: string, object: string) {
    requireScope(actor, 'read');
    const row = await this.row(this.db, actor.workspaceId, ref);
    const dest = this.openDestination(row);
    try {
      return await dest.fields(object);
    } finally {
      await dest.close();
    }
  }

  /** The stored secret values, opened (`{ env }` references as references). */
  private storedSecrets(row: Row): Record<string, unknown> {
    return row.secretsSealed ? this.deps.secrets.open(row.secretsSealed) : {};
  }

  /** The secret columns of an update: untouched when the values did not change. */
  private secretColumns(cur: Row, before: Record<string, unknown>, after: Record<string, unknown>, changed: boolean) {
    if (!changed) return {};
    const names = Object.keys(after);
    return {
      secretsSealed: names.length ? this.deps.secrets.seal(after) : null,
      secretNames: names,
      secretMeta: nextSecretMeta(this.deps.secrets, cur.id, { values: before, meta: cur.secretMeta as SecretMeta, since: cur.updatedAt }, after, new Date()),
    };
  }

  /**
   * Fills the secret fingerprints of connections stored before fingerprints existed (run at
   * start-up; no version bump, no audit event: the values did not change). Returns how many.
   */
  async backfillSecretMeta(): Promise<number> {
    const rows = await this.db.select().from(connections).where(sql`cardinality(${connections.secretNames}) > 0 and ${connections.secretMeta} = '{}'::jsonb`);
    for (const r of rows) {
      const values = this.storedSecrets(r);
      const meta = nextSecretMeta(this.deps.secrets, r.id, { values, meta: {}, since: r.updatedAt }, values, r.updatedAt);
      await this.db.update(connections).set({ secretMeta: meta }).where(and(eq(connections.id, r.id), eq(connections.secretMeta, {})));
    }
    return rows.length;
  }

  /**
   * One redactor for everything a connection's secrets could leak into (run records, run errors,
   * webhook payloads, the row debugger): every resolved secret value in all its encodings. A
   * secret whose `{ env }` variable is unset is skipped (there is nothing to leak).
   */
  redactorFor(row: Row): Redactor {
    const values: string[] = [];
    for (const [k, v] of Object.entries(this.storedSecrets(row))) {
      try {
        const value = this.resolveOne(row.slug, k, v);
        if (value !== undefined) values.push(value);
      } catch {
        // an unset or refused variable: nothing of it can leak
      }
    }
    return secretRedactor(values);
  }

  /** Decrypted secrets with `{ env }` references resolved from the environment. */
  resolveSecrets(row: Row): ResolvedSecrets {
    const out: ResolvedSecrets = {};
    for (const [k, v] of Object.entries(this.storedSecrets(row))) {
      const value = this.resolveOne(row.slug, k, v);
      if (value !== undefined) out[k] = value;
    }
    return out;
  }

  private resolveOne(slug: string, k: string, v: unknown): string | undefined {
    if (typeof v === 'string') return v;
    if (!v || typeof v !== 'object' || !('env' in v)) return undefined;
    const name = String((v as { env: string }).env);
    if (PROTECTED_ENV.has(name)) {
      throw new ConnectorError('secret_env_refused', `Secret "${k}" of connection "${slug}" refers to ${name}, which holds Backhaul's own credentials.`, {
        classification: 'fatal',
        hint: 'Use another variable for the connection\'s secret.',
      });
    }
    const value = this.deps.env[name];
    if (value === undefined) {
      throw new ConnectorError('secret_env_missing', `Secret "${k}" of connection "${slug}" refers to environment variable ${name}, which is not set.`, {
        classification: 'fatal',
        hint: `Set ${name} in Backhaul's environment, or send the secret's value instead.`,
      });
    }
    return value;
  }

  requireRole(row: Row, role: ConnectorRole, path: string): void {
    const t = getConnectorType(row.type);
    if (!t?.roles.includes(role)) {
      throw new UnprocessableError('invalid_reference', `Connection "${row.slug}" (type ${row.type}) cannot serve as a ${role}.`, {
        errors: [{ path, message: `must be a connection with the "${role}" role` }],
      });
    }
  }

  openSource(row: Row): SourceConnector {
    const t = connectorTypeOf(row.type);
    if (!t.openSource) throw new ConnectorError('not_a_source', `Connection "${row.slug}" of type ${row.type} cannot be read as a source.`, { classification: 'fatal', status: 422 });
    return t.openSource(row.config, this.resolveSecrets(row), { denyPrivateNetworks: this.deps.denyPrivateNetworks });
  }

  openDestination(row: Row): DestinationConnector {
    const t = connectorTypeOf(row.type);
    if (!t.openDestination) throw new ConnectorError('not_a_destination', `Connection "${row.slug}" of type ${row.type} cannot be written as a destination.`, { classification: 'fatal', status: 422 });
    const secrets = this.resolveSecrets(row);
    return t.openDestination(row.config, secrets, this.connectorContext(t, row, secrets));
  }

  /** The context a connector is opened with: an OAuth token source when the connection went through the OAuth flow. */
  connectorContext(t: ConnectorType, row: Row, secrets: ResolvedSecrets): ConnectorContext {
    const ctx: ConnectorContext = { denyPrivateNetworks: this.deps.denyPrivateNetworks };
    const spec = t.oauth;
    if (spec && secrets[OAUTH_SECRET.refreshToken]) {
      ctx.oauth = this.tokens.source({ id: row.id, client: () => resolveOAuthClient(spec, row.config as Record<string, unknown>, secrets, this.deps.oauth?.clients ?? {}) });
    }
    return ctx;
  }
}

/** New credentials clear a reauthorization_required status (the next run tries them). */
function newCredentials(secretsChanged: boolean): { authStatus?: null; authError?: null } {
  return secretsChanged ? { authStatus: null, authError: null } : {};
}

export function inUse(resource: string, slug: string, dependents: { type: string; id: string; slug: string }[]): ConflictError {
  return new ConflictError('resource_in_use', `The ${resource} "${slug}" is used by ${dependents.map((d) => `${d.type} "${d.slug}"`).join(', ')}; delete or repoint those first.`, {
    extra: { dependents },
  });
}
