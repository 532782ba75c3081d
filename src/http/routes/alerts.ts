import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { AlertChannelCreate, AlertChannelPatch, AlertChannelPut, AlertChannelView, ChannelTestResult } from '../../domain/alert-channels.ts';
import { AlertView } from '../../domain/alerts.ts';
import type { Services } from '../../domain/services.ts';
import { actorOf } from '../auth.ts';
import { registerCrud } from '../crud.ts';
import { PageQuery, pageOf, problems, ref, RefParams } from '../schemas.ts';

export function alertRoutes(app: FastifyInstance, s: Services): void {
  registerCrud(
    app,
    { path: '/v1/alert-channels', tag: 'alerts', noun: 'alert channel', op: { one: 'AlertChannel', many: 'AlertChannels' }, view: AlertChannelView, create: AlertChannelCreate, patch: AlertChannelPatch, replace: AlertChannelPut },
    {
      list: (a, q) => s.alertChannels.list(a, q),
      get: (a, r) => s.alertChannels.get(a, r),
      create: (a, body) => s.alertChannels.create(a, body),
      update: (a, r, body, ifMatch) => s.alertChannels.update(a, r, body, ifMatch),
      put: (a, r, body, ifMatch, _q, opts) => s.alertChannels.put(a, r, body, ifMatch, opts),
      delete: (a, r, ifMatch) => s.alertChannels.delete(a, r, ifMatch),
    },
  );
  app.post('/v1/alert-channels/:ref/test', {
    schema: {
      tags: ['alerts'],
      operationId: 'testAlertChannel', summary: 'Send a test message; 200 with ok true, or ok false and the error',
      params: RefParams,
      response: { 200: ref(ChannelTestResult), ...problems },
    },
    handler: async (req) => s.alertChannels.test(actorOf(req), (req.params as { ref: string }).ref),
  });
  app.get('/v1/alerts', {
    schema: {
      tags: ['alerts'],
      operationId: 'listAlerts', summary: 'Alerts raised by syncs, newest first',
      querystring: Type.Object({
        ...PageQuery,
        status: Type.Optional(Type.Union([Type.Literal('open'), Type.Literal('resolved')])),
        syncId: Type.Optional(Type.String({ maxLength: 100 })),
      }),
      response: { 200: pageOf(AlertView), ...problems },
    },
    handler: async (req) => s.alerts.list(actorOf(req), req.query as never),
  });
}
