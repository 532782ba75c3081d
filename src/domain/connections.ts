import { Type, type Static } from '@sinclair/typebox';
import { and, eq } from 'drizzle-orm';
import { connections, models, syncs } from '../db/schema.ts';
import type { Tx } from '../db/client.ts';
import { getConnectorType, listConnectorTypes } from '../connectors/registry.ts';
import type { ConnectorRole, ConnectorType, DestinationConnector, ResolvedSecrets, SourceConnector } from '../connectors/types.ts';
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
  SLUG_PATTERN,
  slugTaken,
  type Page,
} from './common.ts';
import type { ServiceDeps } from './deps.ts';
import { getByRef, putBySlug, type PutOptions } from './refs.ts';
import { acceptingReadOnly, readOnlyFields } from './read-only.ts';
import { listOrdered, type ListOptions } from './list.ts';

// Connections: configured connector instances. `secrets` are write-only: sealed with
// AES-256-GCM before they touch the database, opened only to talk to the remote system.

export const Slug = Type.String({ pattern: SLUG_PATTERN, maxLength: 63, description: 'Unique in the workspace; lowercase letters, digits and dashes' });
export const Name = Type.String({ minLength: 1, maxLength: 200 });
const SecretValue = Type.Union([
  Type.String({ maxLength: 16_384 }),
  Type.Object({ env: Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$', maxLength: 200 }) }, { additionalProperties: false }),
]);

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

export function connectionView(r: Row): ConnectionViewT {
  return {
    id: r.id,
    slug: r.slug,
    name: r.name,
    type: r.type,
    roles: getConnectorType(r.type)?.roles ?? [],
    config: r.config as Record<string, unknown>,
    secretNames: [...r.secretNames].sort(),
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

function checkSecretNames(t: ConnectorType, secrets: Record<string, unknown>): void {
  const allowed = new Set(t.secrets.map((s) => s.name));
  const errors = Object.keys(secrets)
    .filter((k) => !allowed.has(k))
    .map((k) => ({ path: `/secrets/${k}`, message: `is not a secret of type "${t.type}" (known: ${[...allowed].join(', ') || 'none'})` }));
  if (errors.length) throw new ValidationError(errors.map((e) => `${e.path} ${e.message}`).join('; '), errors);
}

export class ConnectionService {
  private readonly deps: ServiceDeps;
  constructor(deps: ServiceDeps) {
    this.deps = deps;
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
        let secretsSealed = cur.secretsSealed;
        let secretNames = cur.secretNames;
        if (input.secrets !== undefined) {
          const merged: Record<string, unknown> = cur.secretsSealed ? this.deps.secrets.open(cur.secretsSealed) : {};
          for (const [k, v] of Object.entries(input.secrets)) {
            if (v === null) delete merged[k];
            else merged[k] = v;
          }
          checkSecretNames(t, merged);
          secretNames = Object.keys(merged);
          secretsSealed = secretNames.length ? this.deps.secrets.seal(merged) : null;
        }
        const next = { slug: input.slug ?? cur.slug, name: input.name ?? cur.name, config };
        const changed = changedFields(cur as unknown as Record<string, unknown>, next, ['slug', 'name', 'config']);
        if (input.secrets !== undefined) changed.push('secrets');
        if (changed.length === 0) return connectionView(cur);
        const [row] = await tx
          .update(connections)
          .set({ ...next, secretsSealed, secretNames, version: cur.version + 1, updatedAt: new Date() })
          .where(eq(connections.id, cur.id))
          .returning();
        await recordAudit(tx, actor, 'update', 'connection', cur.id, changed);
        return connectionView(row);
      });
    } catch (e) {
      if (isUniqueViolation(e, 'connections_slug_uq')) throw slugTaken('connection', input.slug ?? ref);
      throw e;
    }
  }

  /** PUT: replace the whole resource, or create it when `ref` is a slug that does not exist yet. */
  async put(actor: Actor, ref: string, input: ConnectionPutInput, ifMatch?: string, opts: PutOptions = {}): Promise<{ created: boolean; connection: ConnectionViewT }> {
    requireScope(actor, 'write');
    assertValid(ConnectionPut, input);
    return this.db.transaction(async (tx) => {
      const r = await putBySlug(tx, connections, actor.workspaceId, ref, input, ifMatch, (slug) => this.create(actor, { ...input, slug }, tx), () => this.replace(tx, actor, ref, input, ifMatch), {
        ...opts,
        readOnly: { view: connectionView, fields: readOnlyFields(ConnectionPutBase, ConnectionView) },
      });
      return { created: r.created, connection: r.value };
    });
  }

  private async replace(tx: Tx, actor: Actor, ref: string, input: ConnectionPutInput, ifMatch: string | undefined): Promise<ConnectionViewT> {
    const row = await getByRef(tx, connections, 'connection', actor.workspaceId, ref, { forUpdate: true });
    checkVersion(ifMatch, row.version);
    if (input.type !== row.type) {
      throw new UnprocessableError('immutable_field', `A connection's type cannot change (it is "${row.type}"). Create a new connection instead.`, {
        errors: [{ path: '/type', message: 'cannot change' }],
      });
    }
    const t = connectorTypeOf(row.type);
    const config = validateConnectorConfig(t.configSchema, input.config);
    let secretsSealed = row.secretsSealed;
    let secretNames = row.secretNames;
    if (input.secrets !== undefined) {
      checkSecretNames(t, input.secrets);
      secretNames = Object.keys(input.secrets);
      secretsSealed = secretNames.length ? this.deps.secrets.seal(input.secrets) : null;
    }
    const next = { slug: input.slug ?? row.slug, name: input.name, config };
    const changed = changedFields(row as unknown as Record<string, unknown>, next, ['slug', 'name', 'config']);
    if (input.secrets !== undefined) changed.push('secrets');
    if (changed.length === 0) return connectionView(row);
    try {
      const [updated] = await tx
        .update(connections)
        .set({ ...next, secretsSealed, secretNames, version: row.version + 1, updatedAt: new Date() })
        .where(eq(connections.id, row.id))
        .returning();
      await recordAudit(tx, actor, 'replace', 'connection', row.id, changed);
      return connectionView(updated);
    } catch (e) {
      if (isUniqueViolation(e, 'connections_slug_uq')) throw slugTaken('connection', next.slug);
      throw e;
    }
  }

  async delete(actor: Actor, ref: string, ifMatch?: string): Promise<void> {
    requireScope(actor, 'write');
    await this.db.transaction(async (tx) => {
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
  async test(actor: Actor, ref: string): Promise<{ ok: boolean; latencyMs?: number; error?: { code: string; message: string; hint?: string } }> {
    requireScope(actor, 'read');
    const row = await this.row(this.db, actor.workspaceId, ref);
    const started = performance.now();
    try {
      const t = connectorTypeOf(row.type);
      const conn = t.roles.includes('source') && t.openSource ? this.openSource(row) : this.openDestination(row);
      try {
        await conn.test();
      } finally {
        await conn.close();
      }
      return { ok: true, latencyMs: Math.round(performance.now() - started) };
    } catch (e) {
      if (e instanceof ConnectorError) return { ok: false, error: { code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}) } };
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

  /** Decrypted secrets with `{ env }` references resolved from the environment. */
  resolveSecrets(row: Row): ResolvedSecrets {
    const raw = row.secretsSealed ? this.deps.secrets.open(row.secretsSealed) : {};
    const out: ResolvedSecrets = {};
    for (const [k, v] of Object.entries(raw)) {
      if (typeof v === 'string') out[k] = v;
      else if (v && typeof v === 'object' && 'env' in v) {
        const name = String((v as { env: string }).env);
        const value = this.deps.env[name];
        if (value === undefined) {
          throw new ConnectorError('secret_env_missing', `Secret "${k}" of connection "${row.slug}" refers to environment variable ${name}, which is not set.`, {
            classification: 'fatal',
            hint: `Set ${name} in Backhaul's environment, or send the secret's value instead.`,
          });
        }
        out[k] = value;
      }
    }
    return out;
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
    return t.openDestination(row.config, this.resolveSecrets(row), { denyPrivateNetworks: this.deps.denyPrivateNetworks });
  }
}

export function inUse(resource: string, slug: string, dependents: { type: string; id: string; slug: string }[]): ConflictError {
  return new ConflictError('resource_in_use', `The ${resource} "${slug}" is used by ${dependents.map((d) => `${d.type} "${d.slug}"`).join(', ')}; delete or repoint those first.`, {
    extra: { dependents },
  });
}
