import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { RunRecordView, RunTrigger, RunView } from '../../domain/runs.ts';
import { MAX_WAIT_SECONDS } from '../../domain/run-waiter.ts';
import type { Services } from '../../domain/services.ts';
import { RUN_STATUSES } from '../../engine/status.ts';
import { actorOf } from '../auth.ts';
import { IdempotencyHeader, PageQuery, pageOf, problems, ref, RefParams } from '../schemas.ts';

export function runRoutes(app: FastifyInstance, s: Services): void {
  const tags = ['runs'];
  app.post('/v1/syncs/:ref/runs', {
    schema: {
      tags,
      operationId: 'triggerRun', summary: 'Trigger a run: 202 and the new run, or 200 and the queued run the sync already has (Backhaul-Existing-Run: true)',
      params: RefParams,
      headers: IdempotencyHeader,
      body: Type.Optional(ref(RunTrigger)),
      response: { 202: ref(RunView), 200: ref(RunView), ...problems },
    },
    handler: async (req, reply) => {
      const { run, created } = await s.runs.trigger(actorOf(req), (req.params as { ref: string }).ref, (req.body ?? {}) as never, 'api');
      reply.header('location', `/v1/runs/${run.id}`);
      if (!created) reply.header('backhaul-existing-run', 'true');
      return reply.code(created ? 202 : 200).send(run);
    },
  });
  app.get('/v1/syncs/:ref/runs', {
    schema: {
      tags,
      operationId: 'listSyncRuns', summary: "A sync's runs, newest first",
      params: RefParams,
      querystring: Type.Object({ ...PageQuery, status: Type.Optional(Type.Union(RUN_STATUSES.map((x) => Type.Literal(x)))) }),
      response: { 200: pageOf(RunView), ...problems },
    },
    handler: async (req) => s.runs.listForSync(actorOf(req), (req.params as { ref: string }).ref, req.query as never),
  });
  const RunParams = Type.Object({ id: Type.String({ maxLength: 100 }) });
  app.get('/v1/runs/:id', {
    schema: {
      tags,
      operationId: 'getRun',
      summary: 'Get a run; with ?wait=S, long-poll until it is terminal or S seconds passed',
      description:
        'With `wait`, the answer comes as soon as the run reaches a terminal status (`succeeded`, `partially_succeeded`, `failed`, `cancelled`), ' +
        'or after `wait` seconds with the run as it is then: 200 either way; `Backhaul-Run-Terminal` says which. Waiting costs the server no polling.',
      params: RunParams,
      querystring: Type.Object({
        wait: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_WAIT_SECONDS, description: `Seconds to wait for a terminal status (1 to ${MAX_WAIT_SECONDS})` })),
      }),
      response: {
        200: {
          description: 'The run',
          headers: {
            'backhaul-run-terminal': { type: 'string', enum: ['true', 'false'], description: 'With ?wait: whether the run is terminal (false: the wait timed out)' },
          },
          content: { 'application/json': { schema: ref(RunView) } },
        },
        ...problems,
      },
    },
    handler: async (req, reply) => {
      const { id } = req.params as { id: string };
      const { wait } = req.query as { wait?: number };
      if (wait === undefined) return s.runs.get(actorOf(req), id);
      // The client going away (the response closes unsent) removes its waiter.
      const gone = new AbortController();
      const onClose = () => {
        if (!reply.raw.writableFinished) gone.abort();
      };
      reply.raw.once('close', onClose);
      try {
        const { run, terminal, endedBy } = await s.runWaiter.wait(actorOf(req), id, wait, gone.signal);
        req.log.debug({ runId: id, terminal, endedBy }, 'run wait ended');
        reply.header('backhaul-run-terminal', String(terminal));
        return run;
      } finally {
        reply.raw.off('close', onClose);
      }
    },
  });
  app.post('/v1/runs/:id/cancel', {
    schema: { tags, operationId: 'cancelRun', summary: 'Cancel a run: a queued run at once, a running one between batches', params: RunParams, response: { 200: ref(RunView), ...problems } },
    handler: async (req) => s.runs.cancel(actorOf(req), (req.params as { id: string }).id),
  });
  app.get('/v1/runs/:id/records', {
    schema: {
      tags,
      operationId: 'listRunRecords', summary: 'The outcome of every row of a run',
      params: RunParams,
      querystring: Type.Object({
        ...PageQuery,
        status: Type.Optional(Type.Union([Type.Literal('succeeded'), Type.Literal('rejected'), Type.Literal('invalid')])),
        operation: Type.Optional(Type.Union([Type.Literal('insert'), Type.Literal('update'), Type.Literal('delete'), Type.Literal('none')])),
        primaryKey: Type.Optional(Type.String({ maxLength: 1000 })),
        redelivered: Type.Optional(Type.Boolean({ description: 'Only rows that may have reached the destination more than once (true), or only the others (false)' })),
      }),
      response: { 200: pageOf(RunRecordView), ...problems },
    },
    handler: async (req) => s.runs.records(actorOf(req), (req.params as { id: string }).id, req.query as never),
  });
  app.get('/v1/syncs/:ref/records/:primaryKey', {
    schema: {
      tags,
      operationId: 'getRecordHistory', summary: "One row's history across runs, newest first",
      params: Type.Object({ ref: Type.String({ maxLength: 100 }), primaryKey: Type.String({ maxLength: 1000 }) }),
      querystring: Type.Object(PageQuery),
      response: { 200: pageOf(RunRecordView), ...problems },
    },
    handler: async (req) => {
      const p = req.params as { ref: string; primaryKey: string };
      return s.runs.history(actorOf(req), p.ref, p.primaryKey, req.query as never);
    },
  });
}
