import type { FastifyInstance } from 'fastify';
import type { Services } from '../../domain/services.ts';
import { constantTimeEqual } from '../../lib/crypto.ts';
import { UnauthorizedError } from '../../errors.ts';

// GET /metrics: Prometheus text. Public unless BACKHAUL_METRICS_TOKEN is set (then Bearer <token>).
export function metricsRoutes(app: FastifyInstance, s: Services, token: string | undefined): void {
  app.get('/metrics', { config: { public: true }, schema: { tags: ['health'], summary: 'Prometheus metrics (text exposition format)' } }, async (req, reply) => {
    if (token) {
      const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
      if (!m || !constantTimeEqual(m[1], token)) throw new UnauthorizedError('GET /metrics requires "Authorization: Bearer <BACKHAUL_METRICS_TOKEN>".');
    }
    const body = await s.metrics.text();
    return reply.type(s.metrics.registry.contentType).send(body);
  });
}
