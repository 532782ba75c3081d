import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { ConnectionCreate, ConnectionPatch, ConnectionPut, ConnectionView } from '../../domain/connections.ts';
import type { Services } from '../../domain/services.ts';
import { actorOf } from '../auth.ts';
import { registerCrud } from '../crud.ts';
import { problems, RefParams, ListOrderQuery } from '../schemas.ts';

export function connectionRoutes(app: FastifyInstance, s: Services): void {
  registerCrud(
    app,
    { path: '/v1/connections', tag: 'connections', noun: 'connection', op: { one: 'Connection', many: 'Connections' }, view: ConnectionView, create: ConnectionCreate, patch: ConnectionPatch, replace: ConnectionPut, listFilters: { ...ListOrderQuery, type: Type.Optional(Type.String({ maxLength: 100 })) } },
    {
      list: (a, q) => s.connections.list(a, q),
      get: (a, ref) => s.connections.get(a, ref),
      create: (a, body) => s.connections.create(a, body),
      update: (a, ref, body, ifMatch) => s.connections.update(a, ref, body, ifMatch),
      put: async (a, ref, body, ifMatch, _q, opts) => {
        const r = await s.connections.put(a, ref, body, ifMatch, opts);
        return { created: r.created, value: r.connection };
      },
      delete: (a, ref, ifMatch) => s.connections.delete(a, ref, ifMatch),
    },
  );

  const tags = ['connections'];
  app.post('/v1/connections/:ref/test', {
    schema: {
      tags,
      operationId: 'testConnection', summary: 'Test that Backhaul can reach and authenticate to the connection',
      params: RefParams,
      response: {
        200: Type.Object({
          ok: Type.Boolean(),
          latencyMs: Type.Optional(Type.Integer()),
          warnings: Type.Optional(
            Type.Array(Type.Object({ code: Type.String(), message: Type.String(), hint: Type.Optional(Type.String()) }), {
              description: 'It works, but should be changed: `superuser` (the login can reach past read-only), `can_write` (the login can modify data).',
            }),
          ),
          error: Type.Optional(Type.Object({ code: Type.String(), message: Type.String(), hint: Type.Optional(Type.String()) })),
        }),
        ...problems,
      },
    },
    handler: async (req) => s.connections.test(actorOf(req), (req.params as { ref: string }).ref),
  });

  app.get('/v1/connections/:ref/objects', {
    schema: {
      tags,
      operationId: 'listConnectionObjects', summary: "List a destination connection's objects",
      params: RefParams,
      response: { 200: Type.Object({ data: Type.Array(Type.Object({ name: Type.String(), label: Type.Optional(Type.String()) })) }), ...problems },
    },
    handler: async (req) => ({ data: await s.connections.objects(actorOf(req), (req.params as { ref: string }).ref) }),
  });

  app.get('/v1/connections/:ref/objects/:object/fields', {
    schema: {
      tags,
      operationId: 'listObjectFields', summary: 'List the fields of a destination object',
      params: Type.Object({ ref: Type.String({ maxLength: 100 }), object: Type.String({ minLength: 1, maxLength: 200 }) }),
      response: {
        200: Type.Object({
          data: Type.Array(
            Type.Object({
              name: Type.String(),
              type: Type.String(),
              required: Type.Boolean(),
              identifier: Type.Boolean(),
              equality: Type.Optional(Type.Union([Type.Literal('exact'), Type.Literal('case_insensitive')], { description: 'How the destination compares values of this field when matching records.' })),
              allowedValues: Type.Optional(Type.Array(Type.String(), { description: 'The only values the destination accepts (e.g. a restricted picklist).' })),
            }),
          ),
        }),
        ...problems,
      },
    },
    handler: async (req) => {
      const p = req.params as { ref: string; object: string };
      return { data: await s.connections.fields(actorOf(req), p.ref, p.object) };
    },
  });
}
