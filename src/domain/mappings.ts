import { Type, type Static } from '@sinclair/typebox';
import { and, asc, eq, gt } from 'drizzle-orm';
import { connections, mappings } from '../db/schema.ts';
import type { Tx } from '../db/client.ts';
import { ConflictError, NotFoundError, UnprocessableError, ValidationError } from '../errors.ts';
import { newId } from '../lib/ids.ts';
import { assertValid } from '../lib/validate.ts';
import { recordAudit } from './audit.ts';
import type { Actor } from './context.ts';
import { changedFields, checkVersion, decodeCursor, isUniqueViolation, iso, pageLimit, requireScope, sameJson, toPage, type Page } from './common.ts';
import type { ServiceDeps } from './deps.ts';
import type { SyncService } from './syncs.ts';
import type { ConnectionService } from './connections.ts';
import type { ModelService } from './models.ts';
import { suggestMappings, type MappingSuggestion } from '../connectors/automap.ts';
import { getConnectorType } from '../connectors/registry.ts';
import { acceptingReadOnly, readOnlyFields } from './read-only.ts';
import { checkReadOnly } from './refs.ts';

// Mappings: one destination field of a sync and where its value comes from. A child
// collection of the sync; a destination field appears at most once per sync.

export const MappingSource = Type.Union(
  [
    Type.Object({ column: Type.String({ minLength: 1, maxLength: 200 }) }, { additionalProperties: false }),
    Type.Object({ static: Type.Unknown() }, { additionalProperties: false, required: ['static'] }),
    Type.Object({ template: Type.String({ minLength: 1, maxLength: 10_000 }) }, { additionalProperties: false }),
    Type.Object(
      {
        lookup: Type.Object(
          {
            object: Type.String({ minLength: 1, maxLength: 200 }),
            matchField: Type.String({ minLength: 1, maxLength: 200 }),
            sourceColumn: Type.String({ minLength: 1, maxLength: 200 }),
            resultField: Type.String({ minLength: 1, maxLength: 200 }),
            caseInsensitive: Type.Optional(Type.Boolean({ description: 'Compare case-insensitively and trimmed (e-mails); default false' })),
            onMissing: Type.Optional(
              Type.Union([Type.Literal('invalid'), Type.Literal('skip_field')], {
                description: 'No matching record: the row is invalid (default) or the field is left unset',
              }),
            ),
          },
          {
            additionalProperties: false,
            description:
              "The value of `resultField` of the destination record whose `matchField` equals the row's `sourceColumn`; more than one matching record makes the row invalid (lookup_ambiguous). Needs a destination whose type has the `lookup` capability.",
          },
        ),
      },
      { additionalProperties: false },
    ),
  ],
  { description: 'Exactly one of column, static, template, lookup' },
);
const DestinationField = Type.String({ minLength: 1, maxLength: 200 });

export const MappingCreate = Type.Object({ destinationField: DestinationField, source: MappingSource }, { additionalProperties: false, $id: 'MappingCreate' });
/** MappingCreate without its $id, to embed in other schemas (a validator registers an $id once). */
export const MappingItem = Type.Object({ destinationField: DestinationField, source: MappingSource }, { additionalProperties: false });
export const MappingPatch = Type.Object(
  { destinationField: Type.Optional(DestinationField), source: Type.Optional(MappingSource) },
  { additionalProperties: false, $id: 'MappingPatch' },
);
export const MappingSet = Type.Array(MappingCreate, { maxItems: 1000, $id: 'MappingSet' });
export const MappingView = Type.Object(
  {
    id: Type.String(),
    syncId: Type.String(),
    destinationField: Type.String(),
    source: MappingSource,
    createdAt: Type.String({ format: 'date-time' }),
    updatedAt: Type.String({ format: 'date-time' }),
    version: Type.Integer(),
  },
  { $id: 'Mapping' },
);
/** PUT /mappings/{id}: a whole mapping; the GET body's read-only fields are accepted (see read-only.ts). */
export const MappingPut = acceptingReadOnly(MappingItem, MappingView, { $id: 'MappingPut' });
const mappingReadOnly = readOnlyFields(MappingItem, MappingView);
export type MappingCreateInput = Static<typeof MappingCreate>;
export type MappingPatchInput = Static<typeof MappingPatch>;
export type MappingViewT = Static<typeof MappingView>;
export type MappingSourceT = Static<typeof MappingSource>;
type Row = typeof mappings.$inferSelect;

export function mappingView(r: Row): MappingViewT {
  return {
    id: r.id,
    syncId: r.syncId,
    destinationField: r.destinationField,
    source: r.source as MappingSourceT,
    createdAt: iso(r.createdAt)!,
    updatedAt: iso(r.updatedAt)!,
    version: r.version,
  };
}

/** Hook for checks that need the connectors package (template syntax); set at start-up. */
export type MappingSourceCheck = (source: MappingSourceT, path: string) => void;

function fieldTaken(field: string): ConflictError {
  return new ConflictError('mapping_field_taken', `This sync already maps destination field "${field}".`, {
    errors: [{ path: '/destinationField', message: 'is already mapped' }],
  });
}

export class MappingService {
  private readonly deps: ServiceDeps;
  private readonly syncs: SyncService;
  checkSource: MappingSourceCheck = () => {};
  private readonly connections: ConnectionService;
  private readonly models: ModelService;

  constructor(deps: ServiceDeps, syncs: SyncService, connections: ConnectionService, models: ModelService) {
    this.deps = deps;
    this.syncs = syncs;
    this.connections = connections;
    this.models = models;
  }

  /**
   * Proposes mappings from the model's columns to the destination object's fields (skipping fields
   * already mapped). With `apply`, the suggestions at or above `minConfidence` are added in one
   * transaction; existing mappings are never changed.
   */
  async suggest(
    actor: Actor,
    syncRef: string,
    opts: { apply?: boolean; minConfidence?: number } = {},
  ): Promise<{ data: MappingSuggestion[]; applied: MappingViewT[] }> {
    requireScope(actor, opts.apply ? 'write' : 'read');
    const sync = await this.syncs.row(this.db, actor.workspaceId, syncRef);
    const columns = await this.models.columns(actor, sync.modelId);
    const destRow = await this.connections.row(this.db, actor.workspaceId, sync.destinationId);
    const dest = this.connections.openDestination(destRow);
    let fields;
    try {
      fields = await dest.fields(sync.object);
    } finally {
      await dest.close();
    }
    const existing = await this.allForSync(this.db, actor.workspaceId, sync.id);
    const data = suggestMappings(columns, fields, existing);
    if (!opts.apply) return { data, applied: [] };
    const chosen = data.filter((d) => d.confidence >= (opts.minConfidence ?? 0.8));
    const applied = await this.db.transaction(async (tx) => {
      await this.syncs.row(tx, actor.workspaceId, sync.id, { forUpdate: true });
      const out: MappingViewT[] = [];
      for (const m of chosen) {
        const id = newId('mapping');
        const [row] = await tx
          .insert(mappings)
          .values({ id, workspaceId: actor.workspaceId, syncId: sync.id, destinationField: m.destinationField, source: m.source })
          .onConflictDoNothing()
          .returning();
        if (!row) continue; // mapped concurrently: existing mappings win
        await recordAudit(tx, actor, 'create', 'mapping', id, ['destinationField', 'source']);
        out.push(mappingView(row));
      }
      if (out.length) await this.syncs.touch(tx, actor, sync.id, ['mappings']);
      return out;
    });
    return { data, applied };
  }

  private get db() {
    return this.deps.database.db;
  }

  /** Lookup mappings need a destination type with the `lookup` capability (422 lookup_not_supported). */
  private async checkLookups(tx: Tx, workspaceId: string, destinationId: string, sources: { source: MappingSourceT; path: string }[]): Promise<void> {
    const lookups = sources.filter((s) => 'lookup' in s.source);
    if (!lookups.length) return;
    const [dest] = await tx.select({ type: connections.type, slug: connections.slug }).from(connections).where(and(eq(connections.id, destinationId), eq(connections.workspaceId, workspaceId)));
    if (dest && getConnectorType(dest.type)?.capabilities?.lookup) return;
    throw new UnprocessableError('lookup_not_supported', `The destination "${dest?.slug ?? destinationId}" (type ${dest?.type ?? '?'}) cannot look records up, so lookup mappings cannot be used on this sync.`, {
      errors: lookups.map((l) => ({ path: `${l.path}/lookup`, message: 'not supported by this destination' })),
      hint: 'Map the field from a column, a static value or a template instead.',
    });
  }

  async list(actor: Actor, syncRef: string, params: { limit?: number; cursor?: string } = {}): Promise<Page<MappingViewT>> {
    requireScope(actor, 'read');
    const sync = await this.syncs.row(this.db, actor.workspaceId, syncRef);
    const limit = pageLimit(params.limit ?? 200);
    const after = decodeCursor(params.cursor);
    const conds = [eq(mappings.syncId, sync.id), eq(mappings.workspaceId, actor.workspaceId)];
    if (after) conds.push(gt(mappings.id, after));
    const rows = await this.db.select().from(mappings).where(and(...conds)).orderBy(asc(mappings.id)).limit(limit + 1);
    return toPage(rows, limit, mappingView);
  }

  /** Every mapping of a sync (the engine's and GraphQL's view; a sync has at most 1000). */
  async allForSync(tx: Tx, workspaceId: string, syncId: string): Promise<MappingViewT[]> {
    const rows = await tx.select().from(mappings).where(and(eq(mappings.syncId, syncId), eq(mappings.workspaceId, workspaceId))).orderBy(asc(mappings.id));
    return rows.map(mappingView);
  }

  private async rowOf(tx: Tx, actor: Actor, syncId: string, id: string, forUpdate = false): Promise<Row> {
    const q = tx.select().from(mappings).where(and(eq(mappings.id, id), eq(mappings.syncId, syncId), eq(mappings.workspaceId, actor.workspaceId)));
    const rows = forUpdate ? await q.for('update') : await q;
    if (!rows[0]) throw new NotFoundError('mapping', id);
    return rows[0];
  }

  async get(actor: Actor, syncRef: string, id: string): Promise<MappingViewT> {
    requireScope(actor, 'read');
    const sync = await this.syncs.row(this.db, actor.workspaceId, syncRef);
    return mappingView(await this.rowOf(this.db, actor, sync.id, id));
  }

  async create(actor: Actor, syncRef: string, input: MappingCreateInput): Promise<MappingViewT> {
    requireScope(actor, 'write');
    assertValid(MappingCreate, input);
    this.checkSource(input.source, '/source');
    try {
      return await this.db.transaction(async (tx) => {
        const sync = await this.syncs.row(tx, actor.workspaceId, syncRef, { forUpdate: true });
        await this.checkLookups(tx, actor.workspaceId, sync.destinationId, [{ source: input.source, path: '/source' }]);
        const id = newId('mapping');
        const [row] = await tx.insert(mappings).values({ id, workspaceId: actor.workspaceId, syncId: sync.id, destinationField: input.destinationField, source: input.source }).returning();
        await recordAudit(tx, actor, 'create', 'mapping', id, ['destinationField', 'source']);
        await this.syncs.touch(tx, actor, sync.id, ['mappings']);
        return mappingView(row);
      });
    } catch (e) {
      if (isUniqueViolation(e, 'mappings_field_uq')) throw fieldTaken(input.destinationField);
      throw e;
    }
  }

  async update(actor: Actor, syncRef: string, id: string, input: MappingPatchInput, ifMatch?: string, replace = false): Promise<MappingViewT> {
    requireScope(actor, 'write');
    assertValid(replace ? MappingPut : MappingPatch, input);
    if (input.source) this.checkSource(input.source, '/source');
    try {
      return await this.db.transaction(async (tx) => {
        // The sync first, as every mapping write locks it (one lock order: no deadlock with replaceAll).
        const sync = await this.syncs.row(tx, actor.workspaceId, syncRef, { forUpdate: true });
        const cur = await this.rowOf(tx, actor, sync.id, id, true);
        checkVersion(ifMatch, cur.version);
        if (input.source) await this.checkLookups(tx, actor.workspaceId, sync.destinationId, [{ source: input.source, path: '/source' }]);
        if (replace) checkReadOnly(input as Record<string, unknown>, cur, { view: mappingView, fields: mappingReadOnly });
        const next = { destinationField: input.destinationField ?? cur.destinationField, source: input.source ?? cur.source };
        const changed = changedFields(cur as unknown as Record<string, unknown>, next, ['destinationField', 'source']);
        if (!changed.length) return mappingView(cur);
        const [row] = await tx.update(mappings).set({ ...next, version: cur.version + 1, updatedAt: new Date() }).where(eq(mappings.id, cur.id)).returning();
        await recordAudit(tx, actor, replace ? 'replace' : 'update', 'mapping', cur.id, changed);
        await this.syncs.touch(tx, actor, sync.id, ['mappings']);
        return mappingView(row);
      });
    } catch (e) {
      if (isUniqueViolation(e, 'mappings_field_uq')) throw fieldTaken(input.destinationField ?? '');
      throw e;
    }
  }

  async delete(actor: Actor, syncRef: string, id: string, ifMatch?: string): Promise<void> {
    requireScope(actor, 'write');
    await this.db.transaction(async (tx) => {
      const sync = await this.syncs.row(tx, actor.workspaceId, syncRef, { forUpdate: true });
      const cur = await this.rowOf(tx, actor, sync.id, id, true);
      checkVersion(ifMatch, cur.version);
      await tx.delete(mappings).where(eq(mappings.id, cur.id));
      await recordAudit(tx, actor, 'delete', 'mapping', cur.id);
      await this.syncs.touch(tx, actor, sync.id, ['mappings']);
    });
  }

  /**
   * Checks a whole set before anything is written: each destination field once, each source
   * acceptable (templates compile). Paths are JSON pointers under `prefix` (e.g. "/mappings").
   */
  checkSet(input: MappingCreateInput[], prefix = ''): void {
    const seen = new Set<string>();
    const errors = [];
    for (const [i, m] of input.entries()) {
      if (seen.has(m.destinationField)) errors.push({ path: `${prefix}/${i}/destinationField`, message: `"${m.destinationField}" appears more than once` });
      seen.add(m.destinationField);
      this.checkSource(m.source, `${prefix}/${i}/source`);
    }
    if (errors.length) throw new ValidationError('A destination field may be mapped once.', errors, 'duplicate_destination_field');
  }

  /**
   * Makes a sync's mappings equal to `input`, in the caller's transaction (the sync row already
   * locked). Mappings whose field survives keep their id (and bump their own version when their
   * source changed), so references to them stay valid. Returns whether anything changed; the
   * caller bumps the sync's version then (mappings are part of the sync's configuration).
   */
  async applySet(tx: Tx, actor: Actor, syncId: string, input: MappingCreateInput[]): Promise<boolean> {
    const current = await tx.select().from(mappings).where(eq(mappings.syncId, syncId));
    const byField = new Map(current.map((m) => [m.destinationField, m]));
    const keep = new Set<string>();
    let changed = false;
    for (const m of input) {
      const cur = byField.get(m.destinationField);
      if (!cur) {
        const id = newId('mapping');
        await tx.insert(mappings).values({ id, workspaceId: actor.workspaceId, syncId, destinationField: m.destinationField, source: m.source });
        await recordAudit(tx, actor, 'create', 'mapping', id, ['destinationField', 'source']);
        changed = true;
      } else {
        keep.add(cur.id);
        if (!sameJson(cur.source, m.source)) {
          await tx.update(mappings).set({ source: m.source, version: cur.version + 1, updatedAt: new Date() }).where(eq(mappings.id, cur.id));
          await recordAudit(tx, actor, 'replace', 'mapping', cur.id, ['source']);
          changed = true;
        }
      }
    }
    for (const cur of current) {
      if (!keep.has(cur.id)) {
        await tx.delete(mappings).where(eq(mappings.id, cur.id));
        await recordAudit(tx, actor, 'delete', 'mapping', cur.id);
        changed = true;
      }
    }
    return changed;
  }

  /**
   * Replaces the whole set in one transaction (see applySet). If-Match guards it with the sync's
   * version, and a change bumps that version: two writers holding the same ETag cannot both win.
   * Returns the set and the sync's version after the write (the route's ETag).
   */
  async replaceAll(actor: Actor, syncRef: string, input: MappingCreateInput[], ifMatch?: string): Promise<{ data: MappingViewT[]; syncVersion: number }> {
    requireScope(actor, 'write');
    assertValid(MappingSet, input);
    this.checkSet(input);
    return this.db.transaction(async (tx) => {
      const sync = await this.syncs.row(tx, actor.workspaceId, syncRef, { forUpdate: true });
      checkVersion(ifMatch, sync.version);
      await this.checkLookups(tx, actor.workspaceId, sync.destinationId, input.map((m, i) => ({ source: m.source, path: `/${i}/source` })));
      const changed = await this.applySet(tx, actor, sync.id, input);
      const syncVersion = changed ? await this.syncs.touch(tx, actor, sync.id, ['mappings']) : sync.version;
      return { data: await this.allForSync(tx, actor.workspaceId, sync.id), syncVersion };
    });
  }
}
