import type { FastifyInstance } from 'fastify';
import type { Services } from '../../domain/services.ts';
import { constantTimeEqual } from '../../lib/crypto.ts';
import { UnauthorizedError } from '../../errors.ts';
import { problems } from '../schemas.ts';

// GET /metrics: Prometheus text. Public unless BACKHAUL_METRICS_TOKEN is set (then Bearer <token>).
export function metricsRoutes(app: FastifyInstance, s: Services, token: string | undefined): void {
  app.get(
    '/metrics',
    {
      config: { public: true },
      schema: {
        operationId: 'getMetrics',
        tags: ['health'],
        summary: 'Prometheus metrics (text exposition format)',
        description: 'Public unless BACKHAUL_METRICS_TOKEN is set; then it takes "Authorization: Bearer <that token>" (401 without it).',
        response: {
          200: {
            description: 'The metrics, in the Prometheus text exposition format 0.0.4.',
            content: { 'text/plain; version=0.0.4; charset=utf-8': { schema: { type: 'string' } } },
          },
          ...problems,
        },
      },
    },
    async (req, reply) => {
      if (token) {
        const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
        if (!m || !constantTimeEqual(m[1], token)) throw new UnauthorizedError('GET /metrics requires "Authorization: Bearer <BACKHAUL_METRICS_TOKEN>".');
      }
      const body = await s.metrics.text();
      return reply.type(s.metrics.registry.contentType).send(body);
    },
  );
}
