import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { Services } from '../../domain/services.ts';
import {
  CallbackSecretView,
  EVENT_TYPES,
  SecretRotation,
  WebhookDeliveryView,
  WebhookEndpointCreate,
  WebhookEndpointPatch,
  WebhookEndpointPut,
  WebhookEndpointView,
} from '../../domain/webhooks.ts';
import { actorOf } from '../auth.ts';
import { registerCrud } from '../crud.ts';
import { IdempotencyHeader, PageQuery, pageOf, problems, ref, RefParams } from '../schemas.ts';

export function webhookRoutes(app: FastifyInstance, s: Services): void {
  const tags = ['webhooks'];
  registerCrud(
    app,
    { path: '/v1/webhook-endpoints', tag: 'webhooks', noun: 'webhook endpoint', op: { one: 'WebhookEndpoint', many: 'WebhookEndpoints' }, view: WebhookEndpointView, create: WebhookEndpointCreate, patch: WebhookEndpointPatch, replace: WebhookEndpointPut },
    {
      list: (a, q) => s.webhooks.list(a, q),
      get: (a, r) => s.webhooks.get(a, r),
      create: (a, body) => s.webhooks.create(a, body),
      update: (a, r, body, ifMatch) => s.webhooks.update(a, r, body, ifMatch),
      put: (a, r, body, ifMatch, _q, opts) => s.webhooks.put(a, r, body, ifMatch, opts),
      delete: (a, r, ifMatch) => s.webhooks.delete(a, r, ifMatch),
    },
  );

  app.post('/v1/webhook-endpoints/:ref/rotate-secret', {
    schema: {
      tags,
      operationId: 'rotateWebhookSecret', summary: 'Rotate the signing secret (given or generated); the previous one keeps signing during the grace period. Returns the new secret once.',
      params: RefParams,
      headers: IdempotencyHeader,
      body: Type.Optional(ref(SecretRotation)),
      response: { 200: ref(WebhookEndpointView), ...problems },
    },
    handler: async (req) => s.webhooks.rotateSecret(actorOf(req), (req.params as { ref: string }).ref, (req.body ?? {}) as never),
  });

  const DeliveryParams = Type.Object({ ref: Type.String({ minLength: 1, maxLength: 100 }), id: Type.String({ minLength: 1, maxLength: 100 }) });
  app.get('/v1/webhook-endpoints/:ref/deliveries', {
    schema: {
      tags,
      operationId: 'listWebhookDeliveries', summary: "An endpoint's deliveries, newest first, each with its attempts",
      params: RefParams,
      querystring: Type.Object({
        ...PageQuery,
        status: Type.Optional(Type.Union([Type.Literal('pending'), Type.Literal('succeeded'), Type.Literal('failed')])),
        eventType: Type.Optional(Type.Union(EVENT_TYPES.map((e) => Type.Literal(e)))),
      }),
      response: { 200: pageOf(WebhookDeliveryView), ...problems },
    },
    handler: async (req) => s.webhooks.deliveries(actorOf(req), (req.params as { ref: string }).ref, req.query as never),
  });
  app.get('/v1/webhook-endpoints/:ref/deliveries/:id', {
    schema: { tags, operationId: 'getWebhookDelivery', summary: 'One delivery with its attempts', params: DeliveryParams, response: { 200: ref(WebhookDeliveryView), ...problems } },
    handler: async (req) => {
      const p = req.params as { ref: string; id: string };
      return s.webhooks.delivery(actorOf(req), p.ref, p.id);
    },
  });
  app.post('/v1/webhook-endpoints/:ref/deliveries/:id/redeliver', {
    schema: {
      tags,
      operationId: 'redeliverWebhookDelivery', summary: 'Send a delivered (or failed) message again, as a new delivery with the same webhook-id and body (202)',
      params: DeliveryParams,
      headers: IdempotencyHeader,
      response: { 202: ref(WebhookDeliveryView), ...problems },
    },
    handler: async (req, reply) => {
      const p = req.params as { ref: string; id: string };
      const d = await s.webhooks.redeliver(actorOf(req), p.ref, p.id);
      reply.header('location', `/v1/webhook-endpoints/${p.ref}/deliveries/${d.id}`);
      return reply.code(202).send(d);
    },
  });

  app.get('/v1/runs/:id/deliveries', {
    schema: {
      tags,
      operationId: 'listRunDeliveries', summary: "Every webhook delivery about a run (endpoints' and the trigger's callbackUrl)",
      params: Type.Object({ id: Type.String({ maxLength: 100 }) }),
      querystring: Type.Object(PageQuery),
      response: { 200: pageOf(WebhookDeliveryView), ...problems },
    },
    handler: async (req) => {
      const actor = actorOf(req);
      const { id } = req.params as { id: string };
      await s.runs.get(actor, id); // 404 for a run of another workspace
      return s.webhooks.runDeliveries(actor, id, req.query as never);
    },
  });

  app.get('/v1/callback-secret', {
    schema: { tags, operationId: 'getCallbackSecret', summary: "Whether the workspace's callback secret is set (the value is never shown again)", response: { 200: ref(CallbackSecretView), ...problems } },
    handler: async (req) => s.webhooks.callbackSecret(actorOf(req)),
  });
  app.post('/v1/callback-secret', {
    schema: {
      tags,
      operationId: 'rotateCallbackSecret', summary: "Rotate (or create) the secret signing triggers' callbackUrl deliveries; returns it once. The previous one keeps signing during the grace period.",
      headers: IdempotencyHeader,
      body: Type.Optional(ref(SecretRotation)),
      response: { 200: ref(CallbackSecretView), ...problems },
    },
    handler: async (req) => s.webhooks.rotateCallbackSecret(actorOf(req), (req.body ?? {}) as never),
  });
}
