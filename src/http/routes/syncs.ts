import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { MappingCreate, MappingPatch, MappingPut, MappingSet, MappingView } from '../../domain/mappings.ts';
import type { Services } from '../../domain/services.ts';
import { SyncCreate, SyncPatch, SyncPut, SyncView } from '../../domain/syncs.ts';
import { etag } from '../../domain/common.ts';
import { actorOf } from '../auth.ts';
import { registerCrud, sendResource } from '../crud.ts';
import { IdempotencyHeader, IfMatchHeader, PageQuery, pageOf, problems, ref, RefParams, ListOrderQuery } from '../schemas.ts';

export function syncRoutes(app: FastifyInstance, s: Services): void {
  registerCrud(
    app,
    {
      path: '/v1/syncs',
      tag: 'syncs',
      noun: 'sync',
      op: { one: 'Sync', many: 'Syncs' },
      view: SyncView,
      create: SyncCreate,
      patch: SyncPatch,
      replace: SyncPut,
      listFilters: {
        ...ListOrderQuery,
        modelId: Type.Optional(Type.String({ maxLength: 100 })),
        destinationId: Type.Optional(Type.String({ maxLength: 100 })),
        enabled: Type.Optional(Type.Boolean()),
      },
    },
    {
      list: (a, q) => s.syncs.list(a, q),
      get: (a, ref) => s.syncs.get(a, ref),
      create: (a, body) => s.syncs.create(a, body),
      update: (a, ref, body, ifMatch) => s.syncs.update(a, ref, body, ifMatch),
      put: async (a, ref, body, ifMatch, _q, opts) => {
        const r = await s.syncs.put(a, ref, body, ifMatch, opts);
        return { created: r.created, value: r.sync };
      },
      delete: (a, ref, ifMatch) => s.syncs.delete(a, ref, ifMatch),
    },
  );

  const tags = ['mappings'];
  const base = '/v1/syncs/:ref/mappings';
  const MappingParams = Type.Object({ ref: Type.String({ maxLength: 100 }), id: Type.String({ maxLength: 100 }) });
  type P = { ref: string; id: string };

  app.get(base, {
    schema: { tags, operationId: 'listMappings', summary: "List a sync's mappings", params: RefParams, querystring: Type.Object(PageQuery), response: { 200: pageOf(MappingView), ...problems } },
    handler: async (req) => s.mappings.list(actorOf(req), (req.params as P).ref, req.query as { limit?: number }),
  });
  app.post(base, {
    schema: { tags, operationId: 'createMapping', summary: 'Add a mapping', params: RefParams, headers: IdempotencyHeader, body: ref(MappingCreate), response: { 201: ref(MappingView), ...problems } },
    handler: async (req, reply) => {
      const m = await s.mappings.create(actorOf(req), (req.params as P).ref, req.body as never);
      return sendResource(reply, m, 201, `/v1/syncs/${m.syncId}/mappings/${m.id}`);
    },
  });
  app.put(base, {
    schema: {
      tags,
      operationId: 'replaceMappings', summary: 'Replace the whole set of mappings in one transaction',
      description:
        "Mappings are part of the sync's configuration: If-Match, when sent, is checked against the sync's version, a change bumps that version, and the ETag answered is the sync's new version.",
      params: RefParams,
      headers: IfMatchHeader,
      body: ref(MappingSet),
      response: { 200: Type.Object({ data: Type.Array(ref(MappingView)), syncVersion: Type.Integer({ description: "The sync's version after the write (also the ETag)" }) }), ...problems },
    },
    handler: async (req, reply) => {
      const r = await s.mappings.replaceAll(actorOf(req), (req.params as P).ref, req.body as never, req.headers['if-match']);
      reply.header('etag', etag(r.syncVersion));
      return r;
    },
  });
  app.post(`${base}/suggest`, {
    schema: {
      tags,
      operationId: 'suggestMappings', summary: 'Suggest mappings from model columns to destination fields (apply: add those above minConfidence)',
      params: RefParams,
      body: Type.Optional(
        Type.Object(
          { apply: Type.Optional(Type.Boolean()), minConfidence: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })) },
          { additionalProperties: false },
        ),
      ),
      response: {
        200: Type.Object({
          data: Type.Array(
            Type.Object({ destinationField: Type.String(), source: Type.Object({ column: Type.String() }), confidence: Type.Number(), reason: Type.String() }),
          ),
          applied: Type.Array(ref(MappingView)),
        }),
        ...problems,
      },
    },
    handler: async (req) => s.mappings.suggest(actorOf(req), (req.params as P).ref, (req.body ?? {}) as { apply?: boolean; minConfidence?: number }),
  });
  app.get(`${base}/:id`, {
    schema: { tags, operationId: 'getMapping', summary: 'Get a mapping', params: MappingParams, response: { 200: ref(MappingView), ...problems } },
    handler: async (req, reply) => sendResource(reply, await s.mappings.get(actorOf(req), (req.params as P).ref, (req.params as P).id)),
  });
  app.patch(`${base}/:id`, {
    schema: { tags, operationId: 'updateMapping', summary: 'Update a mapping', params: MappingParams, headers: IfMatchHeader, body: ref(MappingPatch), response: { 200: ref(MappingView), ...problems } },
    handler: async (req, reply) => {
      const p = req.params as P;
      return sendResource(reply, await s.mappings.update(actorOf(req), p.ref, p.id, req.body as never, req.headers['if-match']));
    },
  });
  app.put(`${base}/:id`, {
    schema: { tags, operationId: 'replaceMapping', summary: 'Replace a mapping', params: MappingParams, headers: IfMatchHeader, body: ref(MappingPut), response: { 200: ref(MappingView), ...problems } },
    handler: async (req, reply) => {
      const p = req.params as P;
      return sendResource(reply, await s.mappings.update(actorOf(req), p.ref, p.id, req.body as never, req.headers['if-match'], true));
    },
  });
  app.delete(`${base}/:id`, {
    schema: { tags, operationId: 'deleteMapping', summary: 'Delete a mapping', params: MappingParams, headers: IfMatchHeader, response: { 204: Type.Null(), ...problems } },
    handler: async (req, reply) => {
      const p = req.params as P;
      await s.mappings.delete(actorOf(req), p.ref, p.id, req.headers['if-match']);
      return reply.code(204).send();
    },
  });
}
