import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { problems } from '../schemas.ts';

export interface Readiness {
  /** Each check answers true or a reason it is not ready. */
  checks: Record<string, () => Promise<true | string>>;
}

const Health = Type.Object({ status: Type.Literal('ok') }, { description: 'The process is alive.' });
const ReadinessView = Type.Object(
  {
    status: Type.Union([Type.Literal('ok'), Type.Literal('unavailable')]),
    checks: Type.Record(Type.String(), Type.String(), { description: 'Per check (database, migrations, worker…): "ok", or why it is not ready' }),
  },
  { additionalProperties: false },
);

export function healthRoutes(app: FastifyInstance, readiness: Readiness): void {
  app.get(
    '/healthz',
    { config: { public: true }, schema: { operationId: 'getHealth', tags: ['health'], summary: 'The process is alive', response: { 200: Health, ...problems } } },
    async () => ({ status: 'ok' }),
  );
  app.get(
    '/readyz',
    {
      config: { public: true },
      schema: {
        operationId: 'getReadiness',
        tags: ['health'],
        summary: 'Database reachable, migrations applied, worker running where enabled',
        response: {
          200: { ...ReadinessView, description: 'Ready: every check is ok.' },
          503: { ...ReadinessView, description: 'Not ready: the checks that failed say why.' },
          ...problems,
        },
      },
    },
    async (_req, reply) => {
      // Checks run side by side, each bounded (see bounded).
      const entries = await Promise.all(Object.entries(readiness.checks).map(async ([name, check]) => [name, await bounded(check)] as const));
      const results: Record<string, string> = {};
      let ok = true;
      for (const [name, r] of entries) {
        results[name] = r === true ? 'ok' : r;
        if (r !== true) ok = false;
      }
      return reply.code(ok ? 200 : 503).send({ status: ok ? 'ok' : 'unavailable', checks: results });
    },
  );
}

/**
 * A check's answer, or its failure, within 3 s: a database that does not answer fails the probe
 * instead of holding it until the prober gives up.
 */
async function bounded(check: () => Promise<true | string>, timeoutMs = 3000): Promise<true | string> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<string>((resolve) => (timer = setTimeout(() => resolve(`no answer within ${timeoutMs} ms`), timeoutMs)));
  try {
    return await Promise.race([check().catch((e: Error) => e.message || String(e)), late]);
  } finally {
    clearTimeout(timer);
  }
}
