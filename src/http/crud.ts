import { Type, type TObject, type TSchema } from '@sinclair/typebox';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { Actor } from '../domain/context.ts';
import { etag, type Page } from '../domain/common.ts';
import { actorOf } from './auth.ts';
import type { PutOptions } from '../domain/refs.ts';
import { IdempotencyHeader, IfMatchHeader, PageQuery, pageOf, problems, PutHeaders, ref, RefParams } from './schemas.ts';

// The uniform REST surface of a top-level resource addressed by id or slug:
// GET list, POST, GET/PATCH/PUT/DELETE by ref, ETag/If-Match, 201 + Location on create.

export interface CrudHandlers<V extends { id: string; version: number }> {
  list(actor: Actor, query: Record<string, unknown>): Promise<Page<V>>;
  get(actor: Actor, ref: string): Promise<V>;
  create(actor: Actor, body: any, query: Record<string, unknown>): Promise<V>;
  update(actor: Actor, ref: string, body: any, ifMatch: string | undefined, query: Record<string, unknown>): Promise<V>;
  put(actor: Actor, ref: string, body: any, ifMatch: string | undefined, query: Record<string, unknown>, opts: PutOptions): Promise<{ created: boolean; value: V }>;
  delete(actor: Actor, ref: string, ifMatch: string | undefined): Promise<void>;
}

export interface CrudOptions {
  path: string;
  tag: string;
  noun: string;
  /** The noun in operationIds (listSyncs, createSync…): PascalCase singular and plural. */
  op: { one: string; many: string };
  view: TSchema;
  create: TSchema;
  patch: TSchema;
  replace: TSchema;
  listFilters?: Record<string, TSchema>;
  /** Extra query parameters accepted on writes (e.g. models' ?validate=false). */
  writeQuery?: Record<string, TSchema>;
}

export function sendResource<V extends { id: string; version: number }>(reply: FastifyReply, value: V, status = 200, location?: string) {
  reply.header('etag', etag(value.version));
  if (location) reply.header('location', location);
  return reply.code(status).send(value);
}

/**
 * Answers of GET routes serialised once per value: a value the service answers again from its
 * read cache (the same object, see ReadCache) is not serialised again. Keyed weakly, so an
 * entry lives as long as the value does. Serialised by the route's response schema.
 */
const serialized = new WeakMap<object, string>();
function sendRead(reply: FastifyReply, value: object) {
  let body = serialized.get(value);
  if (body === undefined) {
    body = reply.serialize(value) as string;
    serialized.set(value, body);
  }
  return reply.type('application/json; charset=utf-8').send(body);
}

export function registerCrud<V extends { id: string; version: number }>(app: FastifyInstance, o: CrudOptions, h: CrudHandlers<V>): void {
  const one = { 200: ref(o.view), ...problems };
  const writeQuery: TObject = Type.Object(o.writeQuery ?? {});
  const tags = [o.tag];

  app.get(o.path, {
    schema: { operationId: `list${o.op.many}`, tags, summary: `List ${o.noun}s`, querystring: Type.Object({ ...PageQuery, ...(o.listFilters ?? {}) }), response: { 200: pageOf(o.view), ...problems } },
    handler: async (req, reply) => sendRead(reply, await h.list(actorOf(req), req.query as Record<string, unknown>)),
  });

  app.post(o.path, {
    schema: { operationId: `create${o.op.one}`, tags, summary: `Create a ${o.noun}`, body: ref(o.create), querystring: writeQuery, headers: IdempotencyHeader, response: { 201: ref(o.view), ...problems } },
    handler: async (req, reply) => {
      const v = await h.create(actorOf(req), req.body, req.query as Record<string, unknown>);
      return sendResource(reply, v, 201, `${o.path}/${v.id}`);
    },
  });

  app.get(`${o.path}/:ref`, {
    schema: { operationId: `get${o.op.one}`, tags, summary: `Get a ${o.noun} by id or slug`, params: RefParams, response: one },
    handler: async (req, reply) => {
      const v = await h.get(actorOf(req), (req.params as { ref: string }).ref);
      reply.header('etag', etag(v.version));
      return sendRead(reply, v);
    },
  });

  app.patch(`${o.path}/:ref`, {
    schema: { operationId: `update${o.op.one}`, tags, summary: `Update some fields of a ${o.noun}`, params: RefParams, headers: IfMatchHeader, querystring: writeQuery, body: ref(o.patch), response: one },
    handler: async (req, reply) =>
      sendResource(reply, await h.update(actorOf(req), (req.params as { ref: string }).ref, req.body, req.headers['if-match'], req.query as Record<string, unknown>)),
  });

  app.put(`${o.path}/:ref`, {
    schema: {
      operationId: `replace${o.op.one}`,
      tags,
      summary: `Replace a ${o.noun}, or create it when the slug does not exist`,
      params: RefParams,
      headers: PutHeaders,
      querystring: writeQuery,
      body: ref(o.replace),
      response: { ...one, 201: ref(o.view) },
    },
    handler: async (req, reply) => {
      const { created, value } = await h.put(actorOf(req), (req.params as { ref: string }).ref, req.body, req.headers['if-match'], req.query as Record<string, unknown>, {
        ifNoneMatch: req.headers['if-none-match'],
      });
      return sendResource(reply, value, created ? 201 : 200, created ? `${o.path}/${value.id}` : undefined);
    },
  });

  app.delete(`${o.path}/:ref`, {
    schema: { operationId: `delete${o.op.one}`, tags, summary: `Delete a ${o.noun}`, params: RefParams, headers: IfMatchHeader, response: { 204: Type.Null(), ...problems } },
    handler: async (req, reply) => {
      await h.delete(actorOf(req), (req.params as { ref: string }).ref, req.headers['if-match']);
      return reply.code(204).send();
    },
  });
}
