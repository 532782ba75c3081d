import { Type } from '@sinclair/typebox';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { OAuthStart, OAuthStarted, type OAuthCallbackQuery } from '../../domain/oauth.ts';
import type { Services } from '../../domain/services.ts';
import { actorOf } from '../auth.ts';
import { IdempotencyHeader, problems, RefParams } from '../schemas.ts';

// POST /v1/connections/{ref}/oauth/start (API key, write) and GET /v1/oauth/callback (the
// provider's redirect: no API key, the single-use state authenticates it).

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(reply: FastifyReply, status: number, title: string, text: string) {
  return reply
    .code(status)
    .header('content-type', 'text/html; charset=utf-8')
    .header('cache-control', 'no-store')
    .header('content-security-policy', "default-src 'none'; style-src 'unsafe-inline'")
    .send(
      `<!doctype html><html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>` +
        `<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem}</style></head>` +
        `<body><h1>${escapeHtml(title)}</h1><p>${escapeHtml(text)}</p></body></html>`,
    );
}

function requestOrigin(req: FastifyRequest): string {
  return `${req.protocol}://${req.host}`;
}

export function oauthRoutes(app: FastifyInstance, s: Services): void {
  app.post('/v1/connections/:ref/oauth/start', {
    schema: {
      operationId: 'startConnectionOAuth',
      tags: ['connections'],
      summary: 'Start connecting a connection through OAuth 2.0 (authorization code with PKCE)',
      description:
        'Answers the provider\'s consent URL for a browser to open. The flow must complete within 10 minutes; the provider then redirects to GET /v1/oauth/callback, which stores the tokens as the connection\'s secrets and redirects to `returnUrl` (or shows a confirmation page).',
      params: RefParams,
      headers: IdempotencyHeader,
      body: OAuthStart,
      response: { 200: OAuthStarted, ...problems },
    },
    handler: async (req) => s.oauth.start(actorOf(req), (req.params as { ref: string }).ref, (req.body ?? {}) as never, requestOrigin(req)),
  });

  app.get('/v1/oauth/callback', {
    config: { public: true },
    schema: {
      operationId: 'completeOAuth',
      tags: ['connections'],
      summary: "The OAuth provider's redirect: completes a flow started with POST /v1/connections/{ref}/oauth/start",
      querystring: Type.Object({
        state: Type.Optional(Type.String({ maxLength: 500 })),
        code: Type.Optional(Type.String({ maxLength: 4000 })),
        error: Type.Optional(Type.String({ maxLength: 500 })),
        error_description: Type.Optional(Type.String({ maxLength: 2000 })),
      }),
      response: {
        200: { description: 'Connected: a confirmation page (text/html)', content: { 'text/html': { schema: Type.String() } } },
        302: { description: 'Redirect to the returnUrl given at start, with `connection`, `status` (connected|error) and, on error, `code`', type: 'null' },
        ...problems,
      },
    },
    handler: async (req, reply) => {
      const r = await s.oauth.callback(req.query as OAuthCallbackQuery);
      if (r.returnUrl) {
        const u = new URL(r.returnUrl);
        u.searchParams.set('connection', r.ok ? r.connection.slug : r.connectionSlug);
        u.searchParams.set('status', r.ok ? 'connected' : 'error');
        if (!r.ok) u.searchParams.set('code', r.error.code);
        return reply.code(302).header('cache-control', 'no-store').redirect(u.toString());
      }
      if (r.ok) return page(reply, 200, 'Connected', `Connection "${r.connection.slug}" is connected. You can close this window.`);
      throw r.error;
    },
  });
}
