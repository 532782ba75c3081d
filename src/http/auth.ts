import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Actor } from '../domain/context.ts';
import type { Services } from '../domain/services.ts';
import { UnauthorizedError } from '../errors.ts';

declare module 'fastify' {
  interface FastifyRequest {
    actor: Actor | null;
  }
  interface FastifyContextConfig {
    /** Route answers without an API key. */
    public?: boolean;
  }
}

// Bearer-key authentication for every route not marked public. Scopes are checked by the
// services themselves, so REST and GraphQL enforce the same rules.
export function registerAuth(app: FastifyInstance, services: Services): void {
  app.decorateRequest('actor', null);
  app.addHook('onRequest', async (request) => {
    if (request.routeOptions.config?.public || !request.routeOptions.url) return;
    request.actor = await actorFromHeader(services, request);
  });
}

export async function actorFromHeader(services: Services, request: FastifyRequest): Promise<Actor> {
  const header = request.headers.authorization;
  if (!header) throw new UnauthorizedError();
  const m = /^Bearer\s+(\S+)$/i.exec(header);
  if (!m) throw new UnauthorizedError('The Authorization header must be "Bearer bh_…".');
  const actor = await services.apiKeys.authenticate(m[1]);
  if (!actor) throw new UnauthorizedError('This API key is not valid (unknown or revoked).');
  return { ...actor, requestId: request.id };
}

export function actorOf(request: FastifyRequest): Actor {
  if (!request.actor) throw new UnauthorizedError();
  return request.actor;
}
