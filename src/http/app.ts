import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import cors from '@fastify/cors';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import FindMyWay from 'find-my-way';
import type { TSchema } from '@sinclair/typebox';
import { isLoopbackHost, type Config } from '../config.ts';
import type { Services } from '../domain/services.ts';
import { ApiKeyCreate, ApiKeyCreated, ApiKeyView, WorkspaceCreate, WorkspaceView } from '../domain/api-keys.ts';
import { ConnectionCreate, ConnectionPatch, ConnectionPut, ConnectionView } from '../domain/connections.ts';
import { MappingCreate, MappingPatch, MappingSet, MappingView } from '../domain/mappings.ts';
import { ModelCreate, ModelPatch, ModelPut, ModelView } from '../domain/models.ts';
import { SyncCreate, SyncPatch, SyncPut, SyncView } from '../domain/syncs.ts';
import { SequenceCreate, SequencePatch, SequencePut, SequenceRunView, SequenceView } from '../domain/sequences.ts';
import { RunRecordView, RunTrigger, RunView } from '../domain/runs.ts';
import { AppError } from '../errors.ts';
import { bodyAjv, bodyTooDeep, jsonTooDeep, paramsAjv } from '../lib/validate.ts';
import { registerAuth } from './auth.ts';
import { registerIdempotency } from './idempotency.ts';
import { errorHandler, problemOf, sendProblem } from './problem.ts';
import { CONTRACT_SCHEMAS, ProblemSchema } from './schemas.ts';
import { finishOpenapi } from './openapi.ts';
import { adminRoutes } from './routes/admin.ts';
import { connectionRoutes } from './routes/connections.ts';
import { oauthRoutes } from './routes/oauth.ts';
import { healthRoutes, type Readiness } from './routes/health.ts';
import { modelRoutes } from './routes/models.ts';
import { sequenceRoutes } from './routes/sequences.ts';
import { runRoutes } from './routes/runs.ts';
import { syncRoutes } from './routes/syncs.ts';
import { alertRoutes } from './routes/alerts.ts';
import { metricsRoutes } from './routes/metrics.ts';
import { webhookRoutes } from './routes/webhooks.ts';
import { declarativeRoutes, DECLARATIVE_SCHEMAS } from './routes/declarative.ts';
import { CallbackSecretView, SecretRotation, WebhookDeliveryView, WebhookEndpointCreate, WebhookEndpointPatch, WebhookEndpointPut, WebhookEndpointView } from '../domain/webhooks.ts';
import { AlertChannelCreate, AlertChannelPatch, AlertChannelPut, AlertChannelView, ChannelTestResult } from '../domain/alert-channels.ts';
import { AlertView } from '../domain/alerts.ts';

/** Schemas published as OpenAPI components and shared by every route. */
export const SHARED_SCHEMAS: TSchema[] = [
  ProblemSchema,
  WorkspaceCreate,
  WorkspaceView,
  ApiKeyCreate,
  ApiKeyView,
  ApiKeyCreated,
  ConnectionCreate,
  ConnectionPatch,
  ConnectionPut,
  ConnectionView,
  ModelCreate,
  ModelPatch,
  ModelPut,
  ModelView,
  SyncCreate,
  SyncPatch,
  SyncPut,
  SyncView,
  MappingCreate,
  MappingPatch,
  MappingSet,
  MappingView,
  RunTrigger,
  RunView,
  RunRecordView,
  SequenceCreate,
  SequencePatch,
  SequencePut,
  SequenceView,
  SequenceRunView,
  WebhookEndpointCreate,
  WebhookEndpointPatch,
  WebhookEndpointPut,
  WebhookEndpointView,
  WebhookDeliveryView,
  SecretRotation,
  CallbackSecretView,
  AlertChannelCreate,
  AlertChannelPatch,
  AlertChannelPut,
  AlertChannelView,
  ChannelTestResult,
  AlertView,
  ...CONTRACT_SCHEMAS,
  ...DECLARATIVE_SCHEMAS,
];

for (const s of SHARED_SCHEMAS) {
  for (const ajv of [bodyAjv, paramsAjv]) if (!ajv.getSchema(s.$id!)) ajv.addSchema(s);
}

/** How long browsers may cache a CORS preflight, seconds. */
export const CORS_MAX_AGE_S = 7200;

export interface AppOptions {
  config: Config;
  services: Services;
  readiness: Readiness;
  /** A pino logger shared with the rest of the process; default: a new one from config. */
  loggerInstance?: FastifyServerOptions['loggerInstance'];
  /** Registered before the 404 handler is sealed (GraphQL, runs, webhooks plug in here). */
  plugins?: ((app: FastifyInstance) => Promise<void> | void)[];
}

export function loggerOptions(config: Config) {
  return {
    level: config.logLevel,
    redact: {
      paths: ['req.headers.authorization', 'req.headers.cookie', '*.secrets', '*.password', '*.token', '*.clientSecret', '*.headerValue'],
      censor: '[redacted]',
    },
  };
}

export async function buildApp(opts: AppOptions): Promise<FastifyInstance> {
  const { config, services } = opts;
  const app = Fastify({
    ...(opts.loggerInstance ? { loggerInstance: opts.loggerInstance } : { logger: loggerOptions(config) }),
    bodyLimit: config.bodyLimitBytes,
    requestIdHeader: 'x-request-id',
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && /^[\w.-]{1,100}$/.test(given) ? given : randomUUID();
    },
    return503OnClosing: true,
    // Errors fastify answers before routing (a malformed URL, a bad header) are problem+json too.
    frameworkErrors: (error, req, reply) => {
      void sendProblem(reply, problemOf(new AppError(400, 'bad_request', 'Bad request', { detail: error.message }), req.id));
    },
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 300 },
  });

  // Body: strict (no coercion, unknown fields rejected). Query/params/headers: coerced strings.
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? bodyAjv : paramsAjv).compile(schema));
  for (const s of SHARED_SCHEMAS) app.addSchema(s);

  // JSON only (plus merge-patch+json for PATCH); anything else is a 415.
  // - An empty body is no body, whatever Content-Type says (HTTP helpers set it on every request,
  //   DELETE and bodyless POST actions included): the route's schema decides whether it needs one.
  // - A body nested deeper than MAX_JSON_DEPTH answers 400 body_too_deep before anything walks it.
  // - __proto__ and constructor.prototype keys are refused (fastify's secure-json-parse).
  app.removeContentTypeParser(['text/plain', 'application/json']);
  const strictJson = app.getDefaultJsonParser('error', 'error');
  const jsonParser: Parameters<typeof app.addContentTypeParser>[2] = (req, body, done) => {
    if (body.length === 0) {
      done(null, undefined);
      return;
    }
    strictJson(req, body as string, (err: Error | null, value?: unknown) => {
      if (err) done(err, undefined);
      else if (jsonTooDeep(value)) done(bodyTooDeep(), undefined);
      else done(null, value);
    });
  };
  app.addContentTypeParser(['application/json', 'application/merge-patch+json'], { parseAs: 'string' }, jsonParser as never);

  // A callback hook, not an async one: it runs on every response, and a promise each costs.
  app.addHook('onSend', (req, reply, payload, done) => {
    reply.header('x-request-id', req.id);
    done(null, payload);
  });

  // Every request that may write (any method but GET/HEAD/OPTIONS; GraphQL's POST too) empties
  // the cache of sync reads before its answer leaves, so a client always reads its own writes on
  // this instance (other instances follow by NOTIFY; see ReadCache). Reads pay nothing for it.
  const clearReads: (req: unknown, reply: unknown, payload: unknown, done: (err: null, payload: unknown) => void) => void = (_req, _reply, payload, done) => {
    services.syncs.reads.clear();
    done(null, payload);
  };
  app.addHook('onRoute', (route) => {
    if ([route.method].flat().every((m) => m === 'GET' || m === 'HEAD' || m === 'OPTIONS')) return;
    route.onSend = [...[route.onSend ?? []].flat(), clearReads] as never;
  });

  // A POST without a body (or with an empty one) is validated as `{}`: actions take an optional
  // body, and a create that needs one is told which fields are required.
  app.addHook('onRoute', (route) => {
    if (![route.method].flat().includes('POST') || !route.schema?.body) return;
    route.preValidation = [
      (req: { body: unknown }, _reply: unknown, done: () => void) => {
        if (req.body === undefined) req.body = {};
        done();
      },
      ...[route.preValidation ?? []].flat(),
    ] as never;
  });

  // 405: a path that exists with other methods. We keep our own router of what was registered.
  const known = FindMyWay({ ignoreTrailingSlash: true, maxParamLength: 300 });
  app.addHook('onRoute', (route) => {
    for (const m of [route.method].flat()) {
      if (m === 'HEAD' || m === 'OPTIONS') continue;
      try {
        known.on(m as never, route.url, () => {});
      } catch {
        // the same route registered twice under another constraint: already known
      }
    }
  });

  if (config.corsOrigins.length) {
    await app.register(cors, {
      origin: config.corsOrigins.includes('*') ? true : config.corsOrigins,
      methods: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'],
      // traceparent/tracestate/baggage: W3C Trace Context and Baggage, which OpenTelemetry's
      // browser instrumentation adds to every request it traces.
      allowedHeaders: ['authorization', 'content-type', 'if-match', 'if-none-match', 'idempotency-key', 'x-request-id', 'traceparent', 'tracestate', 'baggage'],
      exposedHeaders: ['etag', 'location', 'x-request-id', 'idempotent-replayed'],
      // Browsers cache a preflight this long (Chromium caps it at 2 h, Firefox at 24 h).
      maxAge: CORS_MAX_AGE_S,
    });
  }

  // Error answers are problem+json in every plugin's routes too (swagger-ui's included): the
  // handlers must be set before those plugins register, since each keeps the one it saw.
  app.setErrorHandler(errorHandler);
  // Public routes (no API key): marked before any plugin adds routes. In the OpenAPI document
  // they declare `security: []`, so Swagger UI shows no lock on them.
  app.addHook('onRoute', (route) => {
    if (route.url.startsWith('/docs')) route.config = { ...(route.config as object), public: true } as never;
    if ((route.config as { public?: boolean } | undefined)?.public) route.schema = { ...(route.schema ?? {}), security: [] } as never;
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Backhaul API',
        version: '1.0.0',
        description: 'Self-hosted reverse ETL: connections, models, syncs, mappings and runs. Errors are RFC 9457 problem+json with a stable `code`.',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'API key `bh_…`' } } },
      security: [{ bearer: [] }],
    },
    refResolver: { buildLocalReference: (json, _base, _frag, i) => String(json.$id ?? `def-${i}`) },
    transformObject: finishOpenapi as never,
  });
  await app.register(swaggerUi, { routePrefix: '/docs', uiConfig: { deepLinking: true } });

  app.setNotFoundHandler((req, reply) => {
    const path = req.url.split('?')[0];
    const allowed = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'].filter((m) => known.find(m as never, path));
    if (allowed.length) {
      reply.header('allow', allowed.join(', '));
      return sendProblem(reply, problemOf(new AppError(405, 'method_not_allowed', 'Method not allowed', { detail: `${req.method} is not allowed on ${path}; allowed: ${allowed.join(', ')}.` }), req.id));
    }
    return sendProblem(reply, problemOf(new AppError(404, 'route_not_found', 'Not found', { detail: `No route ${req.method} ${path}.` }), req.id));
  });

  registerAuth(app, services);
  registerIdempotency(app, services.deps.database.db);

  healthRoutes(app, opts.readiness);
  app.get('/openapi.json', { config: { public: true }, schema: { hide: true } }, async () => app.swagger());
  adminRoutes(app, services);
  connectionRoutes(app, services);
  oauthRoutes(app, services);
  modelRoutes(app, services);
  syncRoutes(app, services);
  runRoutes(app, services);
  sequenceRoutes(app, services);
  webhookRoutes(app, services);
  alertRoutes(app, services);
  declarativeRoutes(app, services);
  metricsRoutes(app, services, { token: config.metricsToken, public: config.metricsPublic ?? isLoopbackHost(config.host) });
  for (const p of opts.plugins ?? []) await p(app);

  await app.ready();
  return app;
}
