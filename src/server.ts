import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import type { Config } from './config.ts';
import { connectDatabase, errorSummary, isConnectionError, postgresGuarded, type Database } from './db/client.ts';
import { startEmbeddedPostgres, type EmbeddedDatabase } from './db/embedded.ts';
import { migrate, migrationsApplied } from './db/migrate.ts';
import { bootstrap } from './domain/bootstrap.ts';
import type { DomainHooks } from './domain/deps.ts';
import { createServices, type Services } from './domain/services.ts';
import type { ApiKeyCacheOptions } from './domain/api-keys.ts';
import { buildApp, loggerOptions } from './http/app.ts';
import { registerGraphql } from './graphql/index.ts';
import { loadEncryptionKey, secretBox } from './secrets.ts';
import type { EngineOptions, RunHooks } from './engine/executor.ts';
import { planSchedule } from './engine/scheduler.ts';
import { migrateWorkerSchema, startWorker, type Worker } from './engine/worker.ts';
import { compileTemplate } from './connectors/template.ts';
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
  /** Authenticated-key cache of the API (default: 30 s, 10,000 keys; ttlMs 0 turns it off). */
  apiKeyCache?: ApiKeyCacheOptions;
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
  hooks: RunHooks;
  logger: pino.Logger;
  close(): Promise<void>;
}

export async function startDatabase(config: Config, logger: pino.Logger): Promise<{ url: string; embedded?: EmbeddedDatabase }> {
  if (config.databaseUrl) return { url: config.databaseUrl };
  logger.info({ dataDir: config.dataDir }, 'DATABASE_URL not set: starting embedded PostgreSQL');
  const embedded = await startEmbeddedPostgres({ dataDir: config.dataDir, port: config.embeddedPgPort, log: (m) => logger.warn(m) });
  return { url: embedded.url, embedded };
}

export async function startBackhaul(opts: StartOptions): Promise<Backhaul> {
  const { config } = opts;
  const logger = opts.logger ?? pino(loggerOptions(config));
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
    await migrateWorkerSchema(dbUrl);
    const boot = await bootstrap(database.db, { token: config.bootstrapApiKey });
    if (boot?.token) opts.printBootstrapKey?.(boot.token);

    const clock = opts.engine?.clock;
    const hooks: DomainHooks = {
      // Every sync change re-plans its one scheduled job, in the same transaction.
      syncChanged: async (tx, syncId) => void (await planSchedule(tx, syncId, new Date(clock ? clock.now() : Date.now()))),
    };
    const services = createServices({ database, secrets: secretBox(key), denyPrivateNetworks: config.denyPrivateNetworks, hooks, env: process.env });
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
        engine: { runTimeoutMs: config.runTimeoutSeconds * 1000, ...opts.engine },
        hooks: runHooks,
        tasks: notifier.tasks,
        crontab: notifier.crontab,
        staleAfterMs: opts.staleAfterMs,
        sweepEveryMs: opts.sweepEveryMs,
      });
    }

    let app: FastifyInstance | undefined;
    let url: string | undefined;
    if (opts.api !== false) {
      // Key revocations from any instance reach this one's cache (see ApiKeyService.listen).
      const unlistenKeys = await services.apiKeys.listen(opts.apiKeyCache);
      closers.push(unlistenKeys);
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
    // Shutdown order: stop taking requests, then let the worker checkpoint and release its runs.
    if (worker) closers.push(() => worker!.stop());
    if (app) closers.push(() => app!.close());

    let closing: Promise<void> | undefined;
    const bh: Backhaul = {
      config,
      database,
      services,
      app,
      url,
      worker,
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
