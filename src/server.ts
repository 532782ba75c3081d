import type { FastifyInstance } from 'fastify';
import { createServer, type Server } from 'node:http';
import pino from 'pino';
import type { Config } from './config.ts';
import { connectDatabase, errorSummary, isConnectionError, postgresGuarded, type Database } from './db/client.ts';
import { startDatabase } from './db/embedded.ts';
import { migrate, migrationsApplied } from './db/migrate.ts';
import { bootstrap } from './domain/bootstrap.ts';
import type { DomainHooks } from './domain/deps.ts';
import { createServices, type Services } from './domain/services.ts';
import type { ReadCacheOptions } from './domain/read-cache.ts';
import type { ApiKeyCacheOptions } from './domain/api-keys.ts';
import { buildApp, loggerOptions } from './http/app.ts';
import { registerGraphql } from './graphql/index.ts';
import { loadEncryptionKey, secretBox } from './secrets.ts';
import type { EngineOptions, RunHooks } from './engine/executor.ts';
import { planSchedule, planSequenceSchedule } from './engine/scheduler.ts';
import { migrateWorkerSchema, startWorker, type Worker } from './engine/worker.ts';
import { compileTemplate } from './connectors/template.ts';
import { constantTimeEqual } from './lib/crypto.ts';
import { ConnectorError, ValidationError } from './errors.ts';
import { createNotifier } from './notify/index.ts';

// Process lifecycle: database (embedded or external) → migrations → bootstrap → services →
// HTTP API and/or worker. `close()` reverses it; SIGTERM/SIGINT call it once.

export interface StartOptions {
  config: Config;
  /** Run the HTTP API. */
  api?: boolean;
  /** Run the job worker in this process. */
  worker?: boolean;
  /** Print the bootstrap key (first start) to stdout. */
  printBootstrapKey?: (token: string) => void;
  logger?: pino.Logger;
  /** Engine tuning (tests use short retry delays and a controllable clock). */
  engine?: EngineOptions;
  /** Stale-run sweep tuning. */
  staleAfterMs?: number;
  sweepEveryMs?: number;
  /** Idle poll intervals of the worker's run and schedule lanes (ms; see WorkerOptions). */
  workerPollMs?: { runs?: number; schedules?: number };
  /** Authenticated-key cache of the API (default: 2 s, 10,000 keys; ttlMs 0 turns it off). */
  apiKeyCache?: ApiKeyCacheOptions;
  /** Cache of sync reads of the API (default: 2 s, 1,000 answers; ttlMs 0 turns it off). */
  readCache?: ReadCacheOptions;
  /**
   * Without the API (`backhaul worker`): serve GET /metrics, /healthz and /readyz on this port of
   * config.host (0: a free one, see Backhaul.metricsUrl). Unset: no listener.
   */
  metricsPort?: number;
  /** Handle errors nothing caught, for the whole process (see installProcessHandlers); the CLI does. */
  handleProcessErrors?: boolean;
}

export interface Backhaul {
  config: Config;
  database: Database;
  services: Services;
  app?: FastifyInstance;
  url?: string;
  worker?: Worker;
  /** The worker's metrics listener (StartOptions.metricsPort), e.g. http://127.0.0.1:9464. */
  metricsUrl?: string;
  hooks: RunHooks;
  logger: pino.Logger;
  close(): Promise<void>;
}

export { startDatabase };

/** Fastify's two lines per request (LOG_LEVEL info by default): BACKHAUL_REQUEST_LOG_LEVEL moves them. */
const REQUEST_LOG_MESSAGES = new Set(['incoming request', 'request completed']);

/**
 * The process logger: pino at LOG_LEVEL with secrets redacted; fastify's per-request lines are
 * logged at BACKHAUL_REQUEST_LOG_LEVEL instead of info ("silent": not at all), so they can be
 * turned down without losing the rest.
 */
export function backhaulLogger(config: Config, destination?: pino.DestinationStream): pino.Logger {
  const requestLevel = config.requestLogLevel;
  const options: pino.LoggerOptions = {
    ...loggerOptions(config),
    hooks: {
      logMethod(args, method, level) {
        const msg = typeof args[1] === 'string' ? args[1] : undefined;
        if (level === 30 && requestLevel !== 'info' && msg && REQUEST_LOG_MESSAGES.has(msg)) {
          if (requestLevel !== 'silent') (this[requestLevel as pino.Level] as (...a: unknown[]) => void)(...args);
          return;
        }
        method.apply(this, args);
      },
    },
  };
  return destination ? pino(options, destination) : pino(options);
}

export async function startBackhaul(opts: StartOptions): Promise<Backhaul> {
  const { config } = opts;
  const logger = opts.logger ?? backhaulLogger(config);
  const key = loadEncryptionKey(config, (m) => logger.warn(m));
  const { url: dbUrl, embedded } = await startDatabase(config, logger);
  const database = connectDatabase(dbUrl);
  if (!postgresGuarded()) {
    logger.warn('postgres.js is installed without its connection-loss guards (scripts/patch-postgres.mjs; did `npm install` run with --ignore-scripts?): losing the control database during a transaction can end the process');
  }
  const closers: (() => Promise<void>)[] = [];
  let stopping = false;
  try {
    await migrate(database.sql, (m) => logger.info(m));
    await migrateWorkerSchema(dbUrl, database.sql);
    const boot = await bootstrap(database.db, { token: config.bootstrapApiKey });
    if (boot?.token) opts.printBootstrapKey?.(boot.token);

    const clock = opts.engine?.clock;
    const hooks: DomainHooks = {
      // Every sync change re-plans its one scheduled job, in the same transaction.
      syncChanged: async (tx, syncId) => void (await planSchedule(tx, syncId, new Date(clock ? clock.now() : Date.now()))),
      sequenceChanged: async (tx, sequenceId) => void (await planSequenceSchedule(tx, sequenceId, new Date(clock ? clock.now() : Date.now()))),
    };
    const services = createServices({
      database,
      secrets: secretBox(key),
      denyPrivateNetworks: config.denyPrivateNetworks,
      hooks,
      env: process.env,
      oauth: { clients: config.oauthClients, returnOrigins: config.oauthReturnOrigins, redirectUrl: config.oauthRedirectUrl, publicUrl: config.publicUrl },
    });
    // Secrets stored before fingerprints existed get theirs (a no-op once done).
    await services.connections.backfillSecretMeta();
    await services.alertChannels.backfillSecretMeta();
    services.mappings.checkSource = (source, path) => {
      if (!('template' in source)) return;
      try {
        compileTemplate(source.template);
      } catch (e) {
        const msg = e instanceof ConnectorError ? e.message : String(e);
        throw new ValidationError(`Invalid template: ${msg}`, [{ path: `${path}/template`, message: msg }], 'invalid_template');
      }
    };
    const runHooks: RunHooks = {};

    // ---- Callbacks, alerts, metrics, row debugger (src/notify) ----
    const notifyBase = { url: config.publicUrl };
    const notifier = createNotifier({
      database,
      services,
      config,
      logger,
      clock,
      baseUrl: () => (notifyBase.url ?? `http://${config.host}:${config.port}`).replace(/\/$/, ''),
    });
    Object.assign(runHooks, notifier.hooks);
    // ---- end callbacks block ----

    let worker: Worker | undefined;
    if (opts.worker !== false) {
      worker = await startWorker({
        database,
        services,
        logger,
        concurrency: config.workerConcurrency,
        recordRetentionDays: config.recordRetentionDays,
        engine: { runTimeoutMs: config.runTimeoutSeconds * 1000, fingerprintCacheBytes: config.fingerprintCacheMb * 1024 * 1024, ...opts.engine },
        hooks: runHooks,
        tasks: notifier.tasks,
        crontab: notifier.crontab,
        staleAfterMs: opts.staleAfterMs,
        sweepEveryMs: opts.sweepEveryMs,
        pollIntervalMs: opts.workerPollMs?.runs,
        schedulePollIntervalMs: opts.workerPollMs?.schedules,
      });
      const cache = worker.executor.fingerprintCache;
      services.metrics.keptTables(() => cache.stats);
      logger.info({ concurrency: config.workerConcurrency }, 'Worker started');
    }

    let app: FastifyInstance | undefined;
    let url: string | undefined;
    if (opts.api !== false) {
      // Key revocations from any instance reach this one's cache (see ApiKeyService.listen).
      const unlistenKeys = await services.apiKeys.listen(opts.apiKeyCache);
      closers.push(unlistenKeys);
      // Changes of syncs (and of their references' slugs) from any instance empty this one's
      // cache of sync reads (see ReadCache).
      closers.push(await services.syncs.reads.listen(database.sql, opts.readCache));
      app = await buildApp({
        config,
        services,
        loggerInstance: logger as never,
        plugins: [(app) => registerGraphql(app, services, { production: config.production, database })],
        readiness: {
          checks: {
            database: async () => {
              try {
                return (await database.sql`select 1 as ok`)[0]?.ok === 1 ? true : 'no answer';
              } catch (e) {
                if (isConnectionError(e)) return `unreachable (${errorSummary(e)})`;
                throw e;
              }
            },
            migrations: async () => ((await migrationsApplied(database.sql)) ? true : 'pending migrations'),
            ...(worker ? { worker: async () => (stopping ? 'stopping' : true) } : {}),
          },
        },
      });
      url = await app.listen({ host: config.host, port: config.port });
      notifyBase.url ??= url; // links in events point to this API unless BACKHAUL_PUBLIC_URL says otherwise
    }
    // A worker without the API: its own small listener for Prometheus and health checks.
    let metricsUrl: string | undefined;
    if (opts.metricsPort !== undefined && !app) {
      const listener = await metricsListener({
        host: config.host,
        port: opts.metricsPort,
        token: config.metricsToken,
        metrics: () => services.metrics.text(),
        contentType: services.metrics.registry.contentType,
        ready: async () => {
          // Bounded like the API's /readyz: a database that does not answer fails the probe in 3 s.
          let timer: NodeJS.Timeout | undefined;
          const timedOut = new Promise<string>((resolve) => (timer = setTimeout(() => resolve('no answer within 3000 ms'), 3000)));
          const probe = database.sql`select 1 as ok`.then(
            (r) => (r[0]?.ok === 1 ? (true as const) : 'no answer'),
            (e: Error) => (isConnectionError(e) ? `unreachable (${(e as { code?: string }).code ?? e.message})` : e.message),
          );
          const db = await Promise.race([probe, timedOut]);
          clearTimeout(timer);
          return { database: db, ...(worker ? { worker: stopping ? 'stopping' : (true as const) } : {}) };
        },
      });
      metricsUrl = listener.url;
      logger.info({ url: metricsUrl }, 'Metrics listening (GET /metrics, /healthz, /readyz)');
      closers.push(listener.close);
    }
    // Shutdown order: stop taking requests, then let the worker checkpoint and release its runs;
    // the database (embedded: PostgreSQL itself) closes last.
    if (worker) closers.push(() => worker!.stop());
    if (app) closers.push(() => app!.close());
    // First of all: long-polling run waiters answer now instead of holding the API's close.
    closers.push(() => services.runWaiter.close());
    closers.push(() => services.sequenceRunWaiter.close());

    let closing: Promise<void> | undefined;
    const bh: Backhaul = {
      config,
      database,
      services,
      app,
      url,
      worker,
      metricsUrl,
      hooks: runHooks,
      logger,
      close() {
        stopping = true;
        closing ??= (async () => {
          for (const c of closers.reverse()) await c().catch((e) => logger.error({ err: e }, 'error during shutdown'));
          await database.close();
          await embedded?.stop();
        })();
        return closing;
      },
    };
    // Kept through shutdown (an error while closing is handled the same way); removed at its end.
    const uninstall = opts.handleProcessErrors ? installProcessHandlers(bh) : undefined;
    const close = bh.close;
    bh.close = () => close().finally(() => uninstall?.());
    return bh;
  } catch (e) {
    for (const c of closers.reverse()) await c().catch(() => {});
    await database.close().catch(() => {});
    await embedded?.stop().catch(() => {});
    throw e;
  }
}

/**
 * GET /metrics (Prometheus text; Bearer `token` when set), /healthz (alive) and /readyz (every check
 * true, else 503 naming the failing ones) on host:port, for processes without the API.
 */
async function metricsListener(o: {
  host: string;
  port: number;
  token: string | undefined;
  metrics: () => Promise<string>;
  contentType: string;
  ready: () => Promise<Record<string, true | string>>;
}): Promise<{ url: string; close: () => Promise<void> }> {
  const send = (res: import('node:http').ServerResponse, status: number, body: unknown) => {
    const problem = typeof body === 'object' && body !== null && 'code' in body;
    res.writeHead(status, { 'content-type': problem ? 'application/problem+json' : 'application/json' });
    res.end(JSON.stringify(body));
  };
  const problem = (status: number, title: string, code: string, detail: string) => ({ type: 'about:blank', title, status, code, detail });
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, problem(405, 'Method not allowed', 'method_not_allowed', 'This listener answers GET only.'));
    if (path === '/healthz') return send(res, 200, { status: 'ok' });
    if (path === '/readyz') {
      void o.ready().then((checks) => {
        const ok = Object.values(checks).every((c) => c === true);
        send(res, ok ? 200 : 503, { status: ok ? 'ok' : 'unavailable', checks: Object.fromEntries(Object.entries(checks).map(([k, v]) => [k, v === true ? 'ok' : v])) });
      });
      return;
    }
    if (path === '/metrics') {
      if (o.token) {
        const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
        if (!m || !constantTimeEqual(m[1], o.token)) {
          return send(res, 401, problem(401, 'Unauthorized', 'unauthorized', 'GET /metrics requires "Authorization: Bearer <BACKHAUL_METRICS_TOKEN>".'));
        }
      }
      void o.metrics().then(
        (text) => {
          res.writeHead(200, { 'content-type': o.contentType });
          res.end(text);
        },
        (e: Error) => send(res, 503, problem(503, 'Metrics unavailable', 'metrics_unavailable', e.message)),
      );
      return;
    }
    send(res, 404, problem(404, 'Not found', 'not_found', 'This listener serves GET /metrics, /healthz and /readyz.'));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => resolve());
  });
  const addr = server.address() as { port: number };
  const host = o.host.includes(':') ? `[${o.host}]` : o.host;
  return {
    url: `http://${host}:${addr.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
    };
}

/**
 * What the process does with an error nothing caught (installed by the CLI; returns the uninstaller):
 *  - A rejection caused by a lost control-database connection (isConnectionError) is logged and
 *    the process keeps serving. Its one known source is graphile-worker, which completes and
 *    fails jobs without awaiting the statement; the job left locked is released by the worker's
 *    sweep (releaseLostCompletions), so the state it leaves is known and repaired.
 *  - Anything else — every uncaught exception, and any other unhandled rejection — comes from
 *    code in a state nothing knows: it is logged, the process shuts down gracefully (no new
 *    requests or jobs; running batches finish and checkpoint; the worker's jobs are released)
 *    and exits 1, for its supervisor to start it again. A second fatal error, or a shutdown that
 *    outlasts BACKHAUL_SHUTDOWN_TIMEOUT_MS + 5 s, exits 1 at once.
 */
export function installProcessHandlers(bh: Backhaul): () => Promise<void> {
  const log = bh.logger;
  let suppressed = 0;
  let lastWarn = 0;
  let failing = false;
  const fatal = (kind: string, e: unknown) => {
    log.fatal({ err: e }, `${kind}: shutting down`);
    if (failing) process.exit(1);
    failing = true;
    const force = setTimeout(() => {
      log.fatal('shutdown after an unhandled error timed out; exiting');
      process.exit(1);
    }, bh.config.shutdownTimeoutMs + 5000);
    force.unref();
    void bh.close().finally(() => process.exit(1));
  };
  const onRejection = (reason: unknown) => {
    if (isConnectionError(reason)) {
      const now = Date.now();
      if (now - lastWarn < 5000) {
        suppressed++;
        return;
      }
      log.warn({ cause: errorSummary(reason), alike: suppressed }, 'unhandled rejection: control database connection lost (the worker repairs what it left)');
      lastWarn = now;
      suppressed = 0;
      return;
    }
    fatal('unhandled rejection', reason);
  };
  const onException = (e: unknown) => fatal('uncaught exception', e);
  process.on('unhandledRejection', onRejection);
  process.on('uncaughtException', onException);
  return async () => {
    process.off('unhandledRejection', onRejection);
    process.off('uncaughtException', onException);
  };
}
