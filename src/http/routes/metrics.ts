import type { FastifyInstance } from 'fastify';
import type { Services } from '../../domain/services.ts';
import { constantTimeEqual } from '../../lib/crypto.ts';
import { AppError, UnauthorizedError } from '../../errors.ts';
import { problems } from '../schemas.ts';

export interface MetricsAccess {
  /** BACKHAUL_METRICS_TOKEN: when set, a scraper sends "Authorization: Bearer <token>". */
  token: string | undefined;
  /** Without a token: whether anyone may read (default: only when the API listens on loopback). */
  public: boolean;
}

// GET /metrics: Prometheus text. Its labels name every workspace's syncs, so it is safe by
// default: with a token, the token is required; without one, it is public only when chosen
// (BACKHAUL_METRICS_PUBLIC=true) or when the API listens on loopback only, and answers 403
// `metrics_not_public` otherwise. API keys do not open it: it spans every workspace.
export function metricsRoutes(app: FastifyInstance, s: Services, access: MetricsAccess): void {
  const schema = {
    operationId: 'getMetrics',
    tags: ['health'],
    summary: 'Prometheus metrics (text exposition format)',
    description:
      'With BACKHAUL_METRICS_TOKEN set it takes "Authorization: Bearer <that token>" (401 without it); without a token it answers only when the API listens on loopback or BACKHAUL_METRICS_PUBLIC=true (403 metrics_not_public otherwise).',
    response: {
      200: {
        description: 'The metrics, in the Prometheus text exposition format 0.0.4.',
        content: { 'text/plain; version=0.0.4; charset=utf-8': { schema: { type: 'string' } } },
      },
      ...problems,
    },
  };
  app.get('/metrics', { config: { public: true }, schema }, async (req, reply) => {
    if (access.token) {
      const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
      if (!m || !constantTimeEqual(m[1], access.token)) throw new UnauthorizedError('GET /metrics requires "Authorization: Bearer <BACKHAUL_METRICS_TOKEN>".');
    } else if (!access.public) {
      throw new AppError(403, 'metrics_not_public', 'Forbidden', {
        detail: 'GET /metrics is not public: the API listens beyond loopback (HOST) and no BACKHAUL_METRICS_TOKEN is set.',
        hint: 'Set BACKHAUL_METRICS_TOKEN and scrape with "Authorization: Bearer <token>", or set BACKHAUL_METRICS_PUBLIC=true if the network is trusted.',
      });
    }
    const body = await s.metrics.text();
    return reply.type(s.metrics.registry.contentType).send(body);
  });
}
