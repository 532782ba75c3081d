import type { FastifyInstance } from 'fastify';

export interface Readiness {
  /** Each check answers true or a reason it is not ready. */
  checks: Record<string, () => Promise<true | string>>;
  /** How long one check may take before it counts as failed (default 3000 ms). */
  timeoutMs?: number;
}

export function healthRoutes(app: FastifyInstance, readiness: Readiness): void {
  const timeoutMs = readiness.timeoutMs ?? 3000;
  app.get('/healthz', { config: { public: true }, schema: { tags: ['health'], summary: 'The process is alive' } }, async () => ({ status: 'ok' }));
  app.get('/readyz', { config: { public: true }, schema: { tags: ['health'], summary: 'Database reachable, migrations applied, worker running where enabled' } }, async (_req, reply) => {
    // Checks run side by side, each bounded: a database that does not answer fails the probe in
    // timeoutMs instead of holding it until the prober gives up.
    const entries = await Promise.all(
      Object.entries(readiness.checks).map(async ([name, check]) => {
        let timer: NodeJS.Timeout | undefined;
        const timedOut = new Promise<string>((resolve) => (timer = setTimeout(() => resolve(`no answer within ${timeoutMs} ms`), timeoutMs)));
        const r = await Promise.race([check().catch((e: Error) => e.message || String(e)), timedOut]);
        clearTimeout(timer);
        return [name, r] as const;
      }),
    );
    const results: Record<string, string> = {};
    let ok = true;
    for (const [name, r] of entries) {
      results[name] = r === true ? 'ok' : r;
      if (r !== true) ok = false;
    }
    return reply.code(ok ? 200 : 503).send({ status: ok ? 'ok' : 'unavailable', checks: results });
  });
}
