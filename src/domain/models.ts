import { Type, type Static } from '@sinclair/typebox';
import { and, eq } from 'drizzle-orm';
import { connections, models, syncs } from '../db/schema.ts';
import type { Tx } from '../db/client.ts';
import type { Column } from '../connectors/types.ts';
import { ConnectorError, UnprocessableError } from '../errors.ts';
import { newId } from '../lib/ids.ts';
import { assertValid } from '../lib/validate.ts';
import { recordAudit } from './audit.ts';
import type { Actor } from './context.ts';
import { changedFields, checkVersion, isUniqueViolation, iso, requireScope, slugTaken, type Page } from './common.ts';
import { inUse, Name, Slug, type ConnectionService } from './connections.ts';
import type { ServiceDeps } from './deps.ts';
import { checkRefSlugs, getByRef, getReferenced, idOfRef, putBySlug, slugsOf, type PutOptions } from './refs.ts';
import { acceptingReadOnly, readOnlyFields } from './read-only.ts';
import { listOrdered, type ListOptions } from './list.ts';

// Models: a SQL query on a source connection plus the column that identifies a row.

const Sql = Type.String({ minLength: 1, maxLength: 100_000 });
const PrimaryKey = Type.String({ minLength: 1, maxLength: 200 });
const ConnectionRef = Type.String({ minLength: 1, maxLength: 100, description: 'Id or slug of a connection with the source role' });

export const ModelCreate = Type.Object(
  { slug: Slug, name: Name, connectionId: ConnectionRef, sql: Sql, primaryKey: PrimaryKey },
  { additionalProperties: false, $id: 'ModelCreate' },
);
export const ModelPatch = Type.Object(
  { slug: Type.Optional(Slug), name: Type.Optional(Name), connectionId: Type.Optional(ConnectionRef), sql: Type.Optional(Sql), primaryKey: Type.Optional(PrimaryKey) },
  { additionalProperties: false, $id: 'ModelPatch' },
);
const ModelPutBase = Type.Object({ slug: Type.Optional(Slug), name: Name, connectionId: ConnectionRef, sql: Sql, primaryKey: PrimaryKey }, { additionalProperties: false });
export const ModelView = Type.Object(
  {
    id: Type.String(),
    slug: Type.String(),
    name: Type.String(),
    connectionId: Type.String(),
    connectionSlug: Type.String({ description: "The source connection's slug (follows a rename)" }),
    sql: Type.String(),
    primaryKey: Type.String(),
    createdAt: Type.String({ format: 'date-time' }),
    updatedAt: Type.String({ format: 'date-time' }),
    version: Type.Integer(),
  },
  { $id: 'Model' },
);
export type ModelCreateInput = Static<typeof ModelCreate>;
export type ModelPatchInput = Static<typeof ModelPatch>;
export const ModelPut = acceptingReadOnly(ModelPutBase, ModelView, { $id: 'ModelPut' });
export type ModelPutInput = Static<typeof ModelPutBase> & { connectionSlug?: string };
/** A model as stored (what GraphQL uses); the API adds its connection's slug. */
export type ModelViewT = Omit<Static<typeof ModelView>, 'connectionSlug'>;
/** A model as the API shows it. */
export type ModelOutT = ModelViewT & { connectionSlug: string };
type Row = typeof models.$inferSelect;

export function modelView(r: Row): ModelViewT {
  return {
    id: r.id,
    slug: r.slug,
    name: r.name,
    connectionId: r.connectionId,
    sql: r.sql,
    primaryKey: r.primaryKey,
    createdAt: iso(r.createdAt)!,
    updatedAt: iso(r.updatedAt)!,
    version: r.version,
  };
}

export interface SaveOptions {
  /** Check the SQL against the source (compiles, primary key exists). Default true. */
  validate?: boolean;
}

export class ModelService {
  private readonly deps: ServiceDeps;
  private readonly connections: ConnectionService;
  constructor(deps: ServiceDeps, connections: ConnectionService) {
    this.deps = deps;
    this.connections = connections;
  }

  private get db() {
    return this.deps.database.db;
  }

  /** connectionId takes an id or a slug (an unknown one matches nothing). */
  async list(actor: Actor, params: ListOptions & { connectionId?: string } = {}): Promise<Page<ModelOutT>> {
    return this.listStored(actor, params, true) as Promise<Page<ModelOutT>>;
  }

  /** list; with `slugs`, each model with its connection's slug (joined in the same statement). */
  async listStored(actor: Actor, params: ListOptions & { connectionId?: string } = {}, slugs = false): Promise<Page<ModelViewT>> {
    requireScope(actor, 'read');
    const connectionId = params.connectionId ? await idOfRef(this.db, connections, actor.workspaceId, params.connectionId) : undefined;
    if (connectionId === null) return { data: [], nextCursor: null };
    const filters = [connectionId ? eq(models.connectionId, connectionId) : undefined];
    if (!slugs) return listOrdered(this.db, models, actor.workspaceId, filters, params, modelView);
    const joined = { columns: { connectionSlug: connections.slug }, join: (q: any) => q.innerJoin(connections, eq(connections.id, models.connectionId)) };
    return listOrdered(this.db, models, actor.workspaceId, filters, params, (r) => ({ ...modelView(r), connectionSlug: (r as Row & { connectionSlug: string }).connectionSlug }), joined);
  }

  async get(actor: Actor, ref: string): Promise<ModelOutT> {
    requireScope(actor, 'read');
    return (await this.withSlugs(this.db, actor.workspaceId, [modelView(await this.row(this.db, actor.workspaceId, ref))]))[0];
  }

  /** Adds the slugs of the models' connections, in one query. */
  async withSlugs(tx: Tx, workspaceId: string, views: ModelViewT[]): Promise<ModelOutT[]> {
    if (!views.length) return [];
    const slugs = await slugsOf(tx, workspaceId, [[connections, views.map((v) => v.connectionId)]]);
    return views.map((v) => ({ ...v, connectionSlug: slugs.get(v.connectionId) ?? '' }));
  }

  async row(tx: Tx, workspaceId: string, ref: string): Promise<Row> {
    return getByRef(tx, models, 'model', workspaceId, ref);
  }

  /** Columns of the model's result, read from the source without fetching rows. */
  async columns(actor: Actor, ref: string): Promise<Column[]> {
    requireScope(actor, 'read');
    const model = await this.row(this.db, actor.workspaceId, ref);
    const conn = await this.connections.row(this.db, actor.workspaceId, model.connectionId);
    const source = this.connections.openSource(conn);
    try {
      return await source.columns(model.sql);
    } finally {
      await source.close();
    }
  }

  async preview(actor: Actor, ref: string, opts: { limit?: number; timeoutMs?: number } = {}) {
    requireScope(actor, 'read');
    const model = await this.row(this.db, actor.workspaceId, ref);
    const conn = await this.connections.row(this.db, actor.workspaceId, model.connectionId);
    const source = this.connections.openSource(conn);
    try {
      return await source.preview(model.sql, Math.min(opts.limit ?? 50, 1000), { timeoutMs: Math.min(opts.timeoutMs ?? 15_000, 60_000) });
    } finally {
      await source.close();
    }
  }

  private async resolveConnection(tx: Tx, actor: Actor, ref: string) {
    const conn = await getReferenced(tx, connections, 'connection', actor.workspaceId, ref, '/connectionId');
    this.connections.requireRole(conn, 'source', '/connectionId');
    return conn;
  }

  /** Saving a model proves its SQL compiles on the source and returns the primary-key column. */
  private async verify(conn: typeof connections.$inferSelect, sql: string, primaryKey: string, opts: SaveOptions): Promise<void> {
    if (opts.validate === false) return;
    const source = this.connections.openSource(conn);
    let cols: Column[];
    try {
      cols = await source.columns(sql);
    } catch (e) {
      // The request is well-formed but its SQL is not acceptable to the source: 422, on /sql.
      if (e instanceof ConnectorError && e.status === 400) {
        throw new UnprocessableError(e.code, e.message, { hint: e.hint, errors: [{ path: '/sql', message: e.message }], cause: e });
      }
      throw e;
    } finally {
      await source.close();
    }
    if (!cols.some((c) => c.name === primaryKey)) {
      throw new UnprocessableError('primary_key_not_found', `The query returns no column "${primaryKey}" (it returns: ${cols.map((c) => c.name).join(', ')}).`, {
        errors: [{ path: '/primaryKey', message: 'is not a column of the query' }],
      });
    }
  }

  async create(actor: Actor, input: ModelCreateInput, opts: SaveOptions = {}, tx: Tx = this.db): Promise<ModelOutT> {
    requireScope(actor, 'write');
    assertValid(ModelCreate, input);
    const conn = await this.resolveConnection(tx, actor, input.connectionId);
    await this.verify(conn, input.sql, input.primaryKey, opts);
    const id = newId('model');
    try {
      const row = await tx.transaction(async (tx2) => {
        const [r] = await tx2
          .insert(models)
          .values({ id, workspaceId: actor.workspaceId, slug: input.slug, name: input.name, connectionId: conn.id, sql: input.sql, primaryKey: input.primaryKey })
          .returning();
        await recordAudit(tx2, actor, 'create', 'model', id, ['slug', 'name', 'connectionId', 'sql', 'primaryKey']);
        return r;
      });
      return { ...modelView(row), connectionSlug: conn.slug };
    } catch (e) {
      if (isUniqueViolation(e, 'models_slug_uq')) throw slugTaken('model', input.slug);
      throw e;
    }
  }

  async update(actor: Actor, ref: string, input: ModelPatchInput, ifMatch?: string, opts: SaveOptions = {}): Promise<ModelOutT> {
    requireScope(actor, 'write');
    assertValid(ModelPatch, input);
    return this.replaceWith(actor, ref, input, ifMatch, opts, 'update');
  }

  async put(actor: Actor, ref: string, input: ModelPutInput, ifMatch?: string, opts: SaveOptions & PutOptions = {}): Promise<{ created: boolean; model: ModelOutT }> {
    requireScope(actor, 'write');
    assertValid(ModelPut, input);
    return (opts.tx ?? this.db).transaction(async (tx) => {
      const r = await putBySlug(tx, models, actor.workspaceId, ref, input, ifMatch, (slug) => this.create(actor, { ...input, slug }, opts, tx), async () => {
        return await this.replaceWith(actor, ref, input, ifMatch, opts, 'replace', tx);
      }, { ifNoneMatch: opts.ifNoneMatch, readOnly: { view: modelView, fields: readOnlyFields(ModelPutBase, ModelView) } });
      return { created: r.created, model: r.value };
    });
  }

  private async replaceWith(
    actor: Actor,
    ref: string,
    input: ModelPatchInput & { connectionSlug?: string },
    ifMatch: string | undefined,
    opts: SaveOptions,
    action: 'update' | 'replace',
    outer?: Tx,
  ): Promise<ModelOutT> {
    const run = async (tx: Tx) => {
      const cur = await getByRef(tx, models, 'model', actor.workspaceId, ref, { forUpdate: true });
      checkVersion(ifMatch, cur.version);
      const conn = input.connectionId !== undefined ? await this.resolveConnection(tx, actor, input.connectionId) : undefined;
      const connection = conn ?? (await this.connections.row(tx, actor.workspaceId, cur.connectionId));
      checkRefSlugs([['connectionSlug', input.connectionSlug, connection.slug]]);
      const next = {
        slug: input.slug ?? cur.slug,
        name: input.name ?? cur.name,
        connectionId: conn?.id ?? cur.connectionId,
        sql: input.sql ?? cur.sql,
        primaryKey: input.primaryKey ?? cur.primaryKey,
      };
      const changed = changedFields(cur as unknown as Record<string, unknown>, next, ['slug', 'name', 'connectionId', 'sql', 'primaryKey']);
      if (changed.length === 0) return { ...modelView(cur), connectionSlug: connection.slug };
      if (changed.some((f) => f === 'connectionId' || f === 'sql' || f === 'primaryKey')) {
        await this.verify(connection, next.sql, next.primaryKey, opts);
      }
      try {
        const [row] = await tx.transaction(async (tx2) => {
          const r = await tx2.update(models).set({ ...next, version: cur.version + 1, updatedAt: new Date() }).where(eq(models.id, cur.id)).returning();
          await recordAudit(tx2, actor, action, 'model', cur.id, changed);
          return r;
        });
        return { ...modelView(row), connectionSlug: connection.slug };
      } catch (e) {
        if (isUniqueViolation(e, 'models_slug_uq')) throw slugTaken('model', next.slug);
        throw e;
      }
    };
    return outer ? run(outer) : this.db.transaction(run);
  }

  async delete(actor: Actor, ref: string, ifMatch?: string, outer: Tx = this.db): Promise<void> {
    requireScope(actor, 'write');
    await outer.transaction(async (tx) => {
      const cur = await getByRef(tx, models, 'model', actor.workspaceId, ref, { forUpdate: true });
      checkVersion(ifMatch, cur.version);
      const used = await tx.select({ id: syncs.id, slug: syncs.slug }).from(syncs).where(eq(syncs.modelId, cur.id)).limit(20);
      if (used.length) throw inUse('model', cur.slug, used.map((d) => ({ type: 'sync', ...d })));
      await tx.delete(models).where(eq(models.id, cur.id));
      await recordAudit(tx, actor, 'delete', 'model', cur.id);
    });
  }
}
