import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { SequenceCreate, SequencePatch, SequencePut, SequenceRunView, SequenceView, SEQUENCE_RUN_STATUSES } from '../../domain/sequences.ts';
import { MAX_WAIT_SECONDS } from '../../domain/run-waiter.ts';
import type { Services } from '../../domain/services.ts';
import { actorOf } from '../auth.ts';
import { registerCrud } from '../crud.ts';
import { IdempotencyHeader, ListOrderQuery, PageQuery, pageOf, problems, ref, RefParams } from '../schemas.ts';

// Sequences: syncs run one after another (src/domain/sequences.ts), and their runs.

export function sequenceRoutes(app: FastifyInstance, s: Services): void {
  registerCrud(
    app,
    {
      path: '/v1/sequences',
      tag: 'sequences',
      noun: 'sequence',
      op: { one: 'Sequence', many: 'Sequences' },
      view: SequenceView,
      create: SequenceCreate,
      patch: SequencePatch,
      replace: SequencePut,
      listFilters: { ...ListOrderQuery, enabled: Type.Optional(Type.Boolean()) },
    },
    {
      list: (a, q) => s.sequences.list(a, q),
      get: (a, ref) => s.sequences.get(a, ref),
      create: (a, body) => s.sequences.create(a, body),
      update: (a, ref, body, ifMatch) => s.sequences.update(a, ref, body, ifMatch),
      put: (a, ref, body, ifMatch, _q, opts) => s.sequences.put(a, ref, body, ifMatch, opts),
      delete: (a, ref, ifMatch) => s.sequences.delete(a, ref, ifMatch),
    },
  );

  const tags = ['sequences'];
  app.post('/v1/sequences/:ref/runs', {
    schema: {
      tags,
      operationId: 'triggerSequenceRun',
      summary: 'Run a sequence: 202 and the new sequence run, or 200 and the one already queued or running (Backhaul-Existing-Run: true)',
      params: RefParams,
      headers: IdempotencyHeader,
      body: Type.Optional(Type.Object({}, { additionalProperties: false })),
      response: {
        202: ref(SequenceRunView),
        200: {
          description: 'The sequence run already active (a sequence has at most one)',
          headers: { 'backhaul-existing-run': { type: 'string', enum: ['true'] } },
          content: { 'application/json': { schema: ref(SequenceRunView) } },
        },
        ...problems,
      },
    },
    handler: async (req, reply) => {
      const { run, created } = await s.sequences.trigger(actorOf(req), (req.params as { ref: string }).ref, 'api');
      reply.header('location', `/v1/sequence-runs/${run.id}`);
      if (!created) reply.header('backhaul-existing-run', 'true');
      return reply.code(created ? 202 : 200).send(run);
    },
  });
  app.get('/v1/sequences/:ref/runs', {
    schema: {
      tags,
      operationId: 'listSequenceRuns',
      summary: "A sequence's runs, newest first",
      params: RefParams,
      querystring: Type.Object({ ...PageQuery, status: Type.Optional(Type.Union(SEQUENCE_RUN_STATUSES.map((x) => Type.Literal(x)))) }),
      response: { 200: pageOf(SequenceRunView), ...problems },
    },
    handler: async (req) => s.sequences.listRuns(actorOf(req), (req.params as { ref: string }).ref, req.query as never),
  });
  const Params = Type.Object({ id: Type.String({ maxLength: 100 }) });
  app.get('/v1/sequence-runs/:id', {
    schema: {
      tags,
      operationId: 'getSequenceRun',
      summary: 'Get a sequence run; with ?wait=S, long-poll until it is terminal or S seconds passed',
      description: 'As GET /v1/runs/{id}?wait=: 200 either way; `Backhaul-Run-Terminal` says whether it is terminal (succeeded, failed, cancelled).',
      params: Params,
      querystring: Type.Object({
        wait: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_WAIT_SECONDS, description: `Seconds to wait for a terminal status (1 to ${MAX_WAIT_SECONDS})` })),
      }),
      response: {
        200: {
          description: 'The sequence run',
          headers: { 'backhaul-run-terminal': { type: 'string', enum: ['true', 'false'], description: 'With ?wait: whether the sequence run is terminal (false: the wait timed out)' } },
          content: { 'application/json': { schema: ref(SequenceRunView) } },
        },
        ...problems,
      },
    },
    handler: async (req, reply) => {
      const { id } = req.params as { id: string };
      const { wait } = req.query as { wait?: number };
      if (wait === undefined) return s.sequences.getRun(actorOf(req), id);
      const gone = new AbortController();
      const onClose = () => {
        if (!reply.raw.writableFinished) gone.abort();
      };
      reply.raw.once('close', onClose);
      try {
        const { run, terminal } = await s.sequenceRunWaiter.wait(actorOf(req), id, wait, gone.signal);
        reply.header('backhaul-run-terminal', String(terminal));
        return run;
      } finally {
        reply.raw.off('close', onClose);
      }
    },
  });
  app.post('/v1/sequence-runs/:id/cancel', {
    schema: {
      tags,
      operationId: 'cancelSequenceRun',
      summary: "Cancel a sequence run: later steps are skipped, and the current step's run is cancelled when the sequence triggered it",
      params: Params,
      response: { 200: ref(SequenceRunView), ...problems },
    },
    handler: async (req) => s.sequences.cancelRun(actorOf(req), (req.params as { id: string }).id),
  });
}
