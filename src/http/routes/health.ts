import type { FastifyInstance } from 'fastify';

export interface Readiness {
  /** Each check answers true or a reason it is not ready. */
  checks: Record<string, () => Promise<true | string>>;
}

export function healthRoutes(app: FastifyInstance, readiness: Readiness): void {
  app.get('/healthz', { config: { public: true }, schema: { tags: ['health'], summary: 'The process is alive' } }, async () => ({ status: 'ok' }));
  app.get('/readyz', { config: { public: true }, schema: { tags: ['health'], summary: 'Database reachable, migrations applied, worker running where enabled' } }, async (_req, reply) => {
    const results: Record<string, string> = {};
    let ok = true;
    for (const [name, check] of Object.entries(readiness.checks)) {
      const r = await bounded(check);
      results[name] = r === true ? 'ok' : r;
      if (r !== true) ok = false;
    }
    return reply.code(ok ? 200 : 503).send({ status: ok ? 'ok' : 'unavailable', checks: results });
  });
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
