import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import websocket from '@fastify/websocket';
import mercurius, { type IResolvers } from 'mercurius';
import { specifiedRules, validate, type DocumentNode, type GraphQLSchema } from 'graphql';
import type { Database } from '../db/client.ts';
import { API_KEYS_CHANNEL } from '../domain/api-keys.ts';
import type { Actor } from '../domain/context.ts';
import type { Services } from '../domain/services.ts';
import { RUN_STATUSES } from '../engine/status.ts';
import { AppError } from '../errors.ts';
import { actorFromHeader } from '../http/auth.ts';
import { errorFormatter, limitError, toGraphqlError } from './errors.ts';
import { registerGraphiql } from './graphiql.ts';
import { bracketDepth, DEFAULT_LIMITS, limitsRule, LimitsExceeded, type GraphqlLimits } from './limits.ts';
import { buildResolvers, runTopic, type GqlContext } from './resolvers.ts';
import { phaseOf, type RunNotification } from './run-updates.ts';
import { typeDefs } from './schema.ts';

// POST/GET /graphql (+ GraphiQL at /graphiql outside production, served from local packages:
// see graphiql.ts), + WebSocket subscriptions on /graphql (graphql-transport-ws).
// Authentication: the REST API's bearer key. Over HTTP a missing or bad key answers 401 with a
// GraphQL body (extensions.code "unauthorized"), so introspection too needs a key.
// Over WebSocket the key goes in connection_init's payload ({"authorization": "Bearer bh_…"}, or
// {"headers": {…}}); without a valid one the server closes the socket with 4403 Forbidden, as
// graphql-transport-ws specifies. A socket lives as long as its key: when the key is revoked,
// deleted or its scopes/owner flag change (NOTIFY on backhaul_api_keys, from any instance), its
// sockets are closed with 4403 and a client reconnects with a key that is valid now.
// An Idempotency-Key header on POST /graphql is honoured by the REST mechanism for the whole
// request (same key and body → the first response replayed; another body → 422).

export const RUNS_CHANNEL = 'backhaul_runs';
export const GRAPHQL_PATH = '/graphql';
/** graphql-transport-ws close code for a refused connection_init. */
export const WS_FORBIDDEN = 4403;
/** Largest WebSocket message: subscriptions are small documents; parsing is bounded by it. */
const WS_MAX_PAYLOAD = 64 * 1024;

/** What we use of a `ws` socket (mercurius' connection holds one). */
interface Socket {
  readonly protocol: string;
  close(code?: number, reason?: string): void;
  once(event: 'close', listener: () => void): unknown;
}

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
    return { runId: n.runId, syncId: n.syncId, workspaceId: n.workspaceId, status: n.status!, phase: phaseOf(n.status!, typeof n.phase === 'string' ? n.phase : null) };
  } catch {
    return undefined;
  }
}

/** A request-level GraphQL failure, shaped as mercurius' own (the error formatter answers 400). */
function requestError(code: string, message: string, extra: Record<string, unknown> = {}): LimitsExceeded {
  return new LimitsExceeded([limitError(code, message, extra)]);
}

/** The same key, the same workspace, nothing less: what a socket authenticated with still holds. */
function sameActor(a: Actor, b: Actor | null): boolean {
  return !!b && a.workspaceId === b.workspaceId && a.keyId === b.keyId && a.owner === b.owner && a.scopes.length === b.scopes.length && a.scopes.every((s) => b.scopes.includes(s));
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
      if (request.routeOptions.url !== GRAPHQL_PATH) return; // GraphiQL's page and assets
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

    // Registered before mercurius, which then uses it as is: a smaller message limit than its
    // 1 MiB default, since mercurius parses a subscription document before any hook can bound it.
    await scope.register(websocket, { options: { maxPayload: WS_MAX_PAYLOAD } });

    /** Authenticated sockets: the actor each was opened with, and how to check it again. */
    const sockets = new Map<Socket, { actor: Actor; token: string }>();

    await scope.register(mercurius, {
      schema: typeDefs,
      resolvers: buildResolvers(services) as unknown as IResolvers,
      path: GRAPHQL_PATH,
      // Our own page (graphiql.ts): mercurius' loads React and GraphiQL from a CDN.
      graphiql: false,
      allowBatchedQueries: true,
      // Validation rules depend on the variables (page sizes), so no per-query validation cache.
      cache: false,
      // Parsing and the standard rules take time in proportion to the document (some rules more):
      // the token limit bounds what one request can cost before our limits rule refuses it.
      graphql: { parseOptions: { maxTokens: limits.maxTokens } },
      validationRules: ({ variables }) => [limitsRule(limits, variables as Record<string, unknown> | undefined)],
      errorFormatter: errorFormatter as never,
      // origin: as REST's oauth routes compute it (src/http/routes/oauth.ts).
      context: (request: FastifyRequest, reply: FastifyReply) => ({ actor: request.actor ?? null, signal: goneSignal(reply), origin: `${request.protocol}://${request.host}` }) as never,
      subscription: {
        // Server pings keep idle sockets alive through proxies.
        keepAlive: 30_000,
        // mercurius calls this as a method of the connection, which holds the socket.
        onConnect: async function (this: { socket?: Socket } | undefined, data: { payload?: unknown }) {
          const socket = this?.socket;
          const authorization = bearerFrom(data.payload);
          let actor: Actor | undefined;
          try {
            if (authorization) actor = await actorFromHeader(services, { headers: { authorization } } as unknown as FastifyRequest);
          } catch {
            actor = undefined;
          }
          if (!actor) {
            // graphql-transport-ws: "the server must close the socket with the event 4403: Forbidden"
            // (mercurius' connection_error message is not part of that protocol).
            if (socket?.protocol === 'graphql-transport-ws') socket.close(WS_FORBIDDEN, 'Forbidden');
            return false;
          }
          if (socket) {
            sockets.set(socket, { actor, token: authorization!.replace(/^Bearer\s+/i, '') });
            socket.once('close', () => sockets.delete(socket));
          }
          return { actor };
        },
      } as never,
    });

    if (!opts.production) registerGraphiql(scope, GRAPHQL_PATH);

    // Brackets nested past the limit are refused before graphql-js parses them (recursively).
    // In a batch, each operation is parsed and validated in its own turn of the event loop
    // (mercurius starts them all at once): ten large documents do not hold it ten times as long.
    scope.graphql.addHook('preParsing', async (_schema: GraphQLSchema, source: string, context: { reply?: { request?: { body?: unknown } } }) => {
      if (Array.isArray(context.reply?.request?.body)) await new Promise((resolve) => setImmediate(resolve));
      const depth = bracketDepth(source, limits.maxNesting);
      if (depth > limits.maxNesting) {
        throw requestError('query_too_deep', `The document nests brackets more than ${limits.maxNesting} levels deep.`, { limit: limits.maxNesting });
      }
    });

    // Subscriptions do not go through mercurius' validation: apply the same rules and limits.
    scope.graphql.addHook('preSubscriptionExecution', async (schema: GraphQLSchema, document: DocumentNode) => {
      let errors;
      try {
        errors = validate(schema, document, [...specifiedRules, limitsRule(limits, {})]);
      } catch (e) {
        if (e instanceof LimitsExceeded) throw toGraphqlError(e.errors[0]);
        throw e;
      }
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

    // Key changes (payload: a key id, or empty for "any key"; also after a lost LISTEN connection,
    // since notifications may have been missed): check the affected sockets' keys again.
    const recheck = async (keyId?: string) => {
      for (const [socket, held] of sockets) {
        if (keyId !== undefined && held.actor.keyId !== keyId) continue;
        services.apiKeys.forget(held.actor.keyId ?? undefined);
        const now = await services.apiKeys.authenticate(held.token).catch(() => undefined);
        if (now === undefined) continue; // database unreachable: the next notification or reconnect decides
        if (!sameActor(held.actor, now)) {
          sockets.delete(socket);
          socket.close(WS_FORBIDDEN, 'Forbidden: API key revoked or changed');
        }
      }
    };
    const keyListener = await opts.database.sql.listen(
      API_KEYS_CHANNEL,
      (keyId) => void recheck(keyId || undefined).catch((e) => scope.log.error({ err: e }, 'API key recheck failed')),
      () => void recheck().catch((e) => scope.log.error({ err: e }, 'API key recheck failed')),
    );

    scope.addHook('onClose', async () => {
      await listener.unlisten().catch(() => {});
      await keyListener.unlisten().catch(() => {});
    });
  });
}

export type { GqlContext };
