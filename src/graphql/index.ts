import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import mercurius, { type IResolvers } from 'mercurius';
import { specifiedRules, validate, type DocumentNode, type GraphQLSchema } from 'graphql';
import type { Database } from '../db/client.ts';
import type { Actor } from '../domain/context.ts';
import type { Services } from '../domain/services.ts';
import { RUN_STATUSES } from '../engine/status.ts';
import { AppError } from '../errors.ts';
import { actorFromHeader } from '../http/auth.ts';
import { errorFormatter, toGraphqlError } from './errors.ts';
import { DEFAULT_LIMITS, limitsRule, type GraphqlLimits } from './limits.ts';
import { buildResolvers, runTopic, type GqlContext, type RunNotification } from './resolvers.ts';
import { typeDefs } from './schema.ts';

// POST/GET /graphql (+ GraphiQL at /graphiql outside production, + WebSocket subscriptions on
// /graphql). Authentication: the REST API's bearer key. Over HTTP a missing or bad key answers
// 401 with a GraphQL body (extensions.code "unauthorized"), so introspection too needs a key.
// Over WebSocket the key goes in connection_init's payload ({"authorization": "Bearer bh_…"});
// without a valid one the server answers connection_error ("Forbidden") and closes.
// An Idempotency-Key header on POST /graphql is honoured by the REST mechanism for the whole
// request (same key and body → the first response replayed; another body → 422).

export const RUNS_CHANNEL = 'backhaul_runs';
export const GRAPHQL_PATH = '/graphql';

export interface GraphqlOptions {
  production: boolean;
  database: Database;
  limits?: Partial<GraphqlLimits>;
}

function bearerFrom(payload: unknown): string | undefined {
  if (!payload || typeof payload !== 'object') return undefined;
  const p = payload as Record<string, unknown>;
  const headers = (p.headers && typeof p.headers === 'object' ? p.headers : {}) as Record<string, unknown>;
  const v = p.authorization ?? p.Authorization ?? headers.authorization ?? headers.Authorization;
  return typeof v === 'string' ? v : undefined;
}

/** Aborted when the response closes unsent (the client went away). */
function goneSignal(reply: FastifyReply): AbortSignal {
  const gone = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) gone.abort();
  });
  return gone.signal;
}

function parseNotification(raw: string): RunNotification | undefined {
  try {
    const n = JSON.parse(raw) as Partial<RunNotification>;
    if (typeof n.runId !== 'string' || typeof n.syncId !== 'string' || typeof n.workspaceId !== 'string') return undefined;
    if (!RUN_STATUSES.includes(n.status as never)) return undefined;
    return { runId: n.runId, syncId: n.syncId, workspaceId: n.workspaceId, status: n.status!, phase: typeof n.phase === 'string' ? n.phase : null };
  } catch {
    return undefined;
  }
}

export async function registerGraphql(app: FastifyInstance, services: Services, opts: GraphqlOptions): Promise<void> {
  const limits: GraphqlLimits = { ...DEFAULT_LIMITS, ...opts.limits };

  await app.register(async (scope) => {
    // Authentication is done here (not by the global hook), so that a WebSocket upgrade can carry
    // its key in connection_init and the answers are GraphQL-shaped.
    // (and the GraphQL routes stay out of the OpenAPI document: openapi/schema.graphql describes them).
    scope.addHook('onRoute', (route) => {
      route.config = { ...((route.config as object) ?? {}), public: true } as never;
      route.schema = { ...(route.schema ?? {}), hide: true } as never;
    });
    scope.addHook('onRequest', async (request: FastifyRequest) => {
      if (request.routeOptions.url !== GRAPHQL_PATH) return; // GraphiQL's static page
      if (String(request.headers.upgrade ?? '').toLowerCase() === 'websocket') return;
      request.actor = await actorFromHeader(services, request);
    });
    scope.addHook('preHandler', async (request: FastifyRequest) => {
      if (request.routeOptions.url === GRAPHQL_PATH && Array.isArray(request.body) && request.body.length > limits.maxBatch) {
        throw new AppError(400, 'too_many_operations', 'Bad request', {
          detail: `A batch may hold at most ${limits.maxBatch} operations; this one has ${request.body.length}.`,
        });
      }
    });

    await scope.register(mercurius, {
      schema: typeDefs,
      resolvers: buildResolvers(services) as unknown as IResolvers,
      path: GRAPHQL_PATH,
      graphiql: !opts.production,
      allowBatchedQueries: true,
      // Validation rules depend on the variables (page sizes), so no per-query validation cache.
      cache: false,
      validationRules: ({ variables }) => [limitsRule(limits, variables as Record<string, unknown> | undefined)],
      errorFormatter: errorFormatter as never,
      context: (request: FastifyRequest, reply: FastifyReply) => ({ actor: request.actor ?? null, signal: goneSignal(reply) }) as never,
      subscription: {
        // Server pings keep idle sockets alive through proxies.
        keepAlive: 30_000,
        onConnect: async (data: { payload?: unknown }) => {
          const authorization = bearerFrom(data.payload);
          if (!authorization) return false;
          try {
            const actor: Actor = await actorFromHeader(services, { headers: { authorization } } as unknown as FastifyRequest);
            return { actor };
          } catch {
            return false;
          }
        },
      },
    });

    // Subscriptions do not go through mercurius' validation: apply the same rules and limits.
    scope.graphql.addHook('preSubscriptionExecution', async (schema: GraphQLSchema, document: DocumentNode) => {
      const errors = validate(schema, document, [...specifiedRules, limitsRule(limits, {})]);
      if (errors.length) throw toGraphqlError(errors[0]);
    });

    // Run changes, from whichever process made them: the engine and the runs service NOTIFY on
    // `backhaul_runs`; each instance LISTENs on its own connection and fans out to its sockets.
    const pubsub = scope.graphql.pubsub;
    const listener = await opts.database.sql.listen(RUNS_CHANNEL, (raw) => {
      const n = parseNotification(raw);
      if (!n) {
        scope.log.warn({ channel: RUNS_CHANNEL }, 'ignored a malformed run notification');
        return;
      }
      pubsub.publish({ topic: runTopic(n.workspaceId, n.syncId), payload: n });
    });
    scope.addHook('onClose', async () => {
      await listener.unlisten().catch(() => {});
    });
  });
}

export type { GqlContext };
