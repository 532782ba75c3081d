import { createServer } from 'node:net';
import { parseArgs } from 'node:util';
import { CONFIG_DOCS, ConfigError, loadConfig, type Config } from './config.ts';

// backhaul serve [--no-worker] | worker [--metrics-port N] | migrate | keys create --workspace W --scope S [--name N]
// Only what a command needs is imported, when it runs: `--help` loads nothing else.
// A failure to start (bad configuration, a port in use, the embedded database) is one line on
// stderr naming the remedy, and a non-zero exit; never a stack trace.

const HELP = `Usage: backhaul <command>

Commands:
  serve [--no-worker]   HTTP API (REST, GraphQL, docs) and, unless --no-worker, the job worker
  worker [--metrics-port <port>]
                        only the job worker; with a port (or BACKHAUL_METRICS_PORT) it serves
                        GET /metrics and /healthz there
  migrate               apply database migrations and exit
  keys create --workspace <slug|id> --scope <read|write|admin> [--name <name>]
                        create an API key and print its token once
  run <sync> [--wait] [--full-resync] [--dry-run] [--timeout <seconds>]
                        trigger a run of a sync (id or slug) on a running server (BACKHAUL_URL,
                        default http://127.0.0.1:3000, key in BACKHAUL_API_KEY) and print it as
                        JSON; --wait waits until it ends (at most --timeout seconds) and exits
                        0 succeeded, 2 partially_succeeded, 1 failed or cancelled, 3 still
                        running at the timeout, 4 the server refused or could not be reached
  export [-o <file>] [--json]
                        write the workspace's configuration as a bundle (YAML; secrets as
                        {env: NAME} references or omitted) from a running server
  plan -f <file> [--json] [--detailed-exitcode]
                        show what applying the bundle (YAML or JSON; - for stdin) would
                        create, update (field by field) and delete; --detailed-exitcode: exit 2
                        when there are changes
  apply -f <file> [--json]
                        plan, then apply exactly that plan in one transaction (all or nothing)
                        export, plan and apply use BACKHAUL_URL and BACKHAUL_API_KEY like run,
                        and exit 1 when the server refuses (the reason and the path into the
                        bundle on stderr)

Beside a running \`backhaul serve\` with the embedded database, migrate and keys create use the
running database.

Environment:
${CONFIG_DOCS.map(([k, d, desc]) => `  ${k.padEnd(32)} ${desc} (default: ${d})`).join('\n')}
`;

/** A start-up failure told in one line (the message says what to do). */
class StartupError extends Error {}

/** Whether `host:port` can be listened on; a port in use is a StartupError naming the variable. */
async function checkPortFree(host: string, port: number, variable: string): Promise<void> {
  if (port === 0) return;
  const problem = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
    const srv = createServer();
    srv.once('error', (e: NodeJS.ErrnoException) => resolve(e));
    srv.listen(port, host, () => srv.close(() => resolve(undefined)));
  });
  if (problem?.code === 'EADDRINUSE') throw new StartupError(`port ${port} on ${host} is already in use (${variable}): stop what uses it, or choose another port with ${variable}.`);
  if (problem?.code === 'EACCES') throw new StartupError(`port ${port} on ${host} needs privileges (${variable}): choose a port above 1023.`);
  if (problem?.code === 'EADDRNOTAVAIL') throw new StartupError(`${host} is not an address of this machine (HOST).`);
}

async function serveOrWork(command: 'serve' | 'worker', rest: string[], config: Config): Promise<void> {
  const { values } = parseArgs({
    args: rest,
    options: { 'no-worker': { type: 'boolean', default: false }, 'metrics-port': { type: 'string' } },
  });
  let metricsPort = config.metricsPort;
  if (values['metrics-port'] !== undefined) {
    metricsPort = Number(values['metrics-port']);
    if (!Number.isInteger(metricsPort) || metricsPort < 0 || metricsPort > 65535) throw new ConfigError([`--metrics-port ${values['metrics-port']}: expected a port from 0 to 65535`]);
  }
  if (command === 'serve') await checkPortFree(config.host, config.port, 'PORT');
  if (command === 'worker' && metricsPort !== undefined) await checkPortFree(config.host, metricsPort, values['metrics-port'] !== undefined ? '--metrics-port' : 'BACKHAUL_METRICS_PORT');
  const { backhaulLogger, startBackhaul } = await import('./server.ts');
  const logger = backhaulLogger(config);
  const bh = await startBackhaul({
    config,
    logger,
    api: command === 'serve',
    worker: command === 'worker' || !values['no-worker'],
    metricsPort: command === 'worker' ? metricsPort : undefined,
    handleProcessErrors: true,
    printBootstrapKey: (token) => {
      process.stdout.write(`\n  Backhaul created workspace "default" and its owner API key:\n\n    ${token}\n\n  It is shown only this once: store it now.\n\n`);
    },
  });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    const force = setTimeout(() => {
      logger.error('shutdown timed out; exiting');
      process.exit(1);
    }, config.shutdownTimeoutMs + 5000);
    force.unref();
    bh.close().then(
      () => {
        logger.info('Backhaul stopped');
        process.exit(0);
      },
      (e) => {
        logger.error({ err: e }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

async function databaseCommand(command: string, rest: string[], argv: string[], config: Config): Promise<void> {
  // Parsed before anything starts: a bad flag costs no database.
  let keyArgs: { workspace: string; scopes: string[]; name?: string } | undefined;
  if (command === 'keys' && rest[0] === 'create') {
    const { values } = parseArgs({ args: rest.slice(1), options: { workspace: { type: 'string', default: 'default' }, scope: { type: 'string', multiple: true }, name: { type: 'string' } } });
    const { SCOPES } = await import('./domain/context.ts');
    const scopes = values.scope ?? ['read'];
    const bad = scopes.filter((s) => !(SCOPES as readonly string[]).includes(s));
    if (bad.length) throw new ConfigError([`--scope ${bad.join(', ')}: expected read, write or admin`]);
    keyArgs = { workspace: values.workspace!, scopes, name: values.name };
  } else if (command !== 'migrate') {
    process.stderr.write(`Unknown command "${argv.join(' ')}".\n\n${HELP}`);
    process.exitCode = 2;
    return;
  }
  const { default: pino } = await import('pino');
  // Logs go to stderr: stdout carries the result (a token, the migrations applied).
  const logger = pino({ level: config.logLevel }, pino.destination(2));
  const { startDatabase } = await import('./db/embedded.ts');
  const { connectDatabase } = await import('./db/client.ts');
  const { migrate } = await import('./db/migrate.ts');
  // attach: beside a running `backhaul serve`, its embedded PostgreSQL is used (and left running).
  const { url, embedded } = await startDatabase(config, logger, { attach: true });
  const database = connectDatabase(url, { max: 2 });
  try {
    if (command === 'migrate') {
      const applied = await migrate(database.sql, (m) => logger.info(m));
      process.stdout.write(applied.length ? `applied: ${applied.join(', ')}\n` : 'database is up to date\n');
    } else if (keyArgs) {
      const { eq, or } = await import('drizzle-orm');
      const { workspaces } = await import('./db/schema.ts');
      const { insertApiKey } = await import('./domain/api-keys.ts');
      await migrate(database.sql);
      const [ws] = await database.db.select().from(workspaces).where(or(eq(workspaces.slug, keyArgs.workspace), eq(workspaces.id, keyArgs.workspace)));
      if (!ws) throw new ConfigError([`--workspace ${keyArgs.workspace}: no such workspace`]);
      const key = await insertApiKey(database.db, ws.id, { name: keyArgs.name ?? `cli ${keyArgs.scopes.join('+')}`, scopes: keyArgs.scopes as never });
      process.stdout.write(`${key.token}\n`);
    }
  } finally {
    await database.close();
    await embedded?.stop();
  }
}

/** `backhaul run`: an API client (no database, no server code): trigger, then long-poll the run. */
async function runCommand(rest: string[]): Promise<void> {
  // Usage errors exit 4 too: 2 means partially_succeeded here.
  const usage = 'usage: backhaul run <sync> [--wait] [--full-resync] [--dry-run] [--timeout <seconds>]';
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      allowPositionals: true,
      options: { wait: { type: 'boolean', default: false }, 'full-resync': { type: 'boolean', default: false }, 'dry-run': { type: 'boolean', default: false }, timeout: { type: 'string' } },
    });
  } catch (e) {
    throw new RunCliError(`${(e as Error).message}\n${usage}`, false);
  }
  const { values, positionals } = parsed;
  if (positionals.length !== 1) throw new RunCliError(usage, false);
  const timeoutS = values.timeout === undefined ? Infinity : Number(values.timeout);
  if (!(timeoutS > 0)) throw new RunCliError(`--timeout ${values.timeout}: expected a number of seconds above 0`, false);
  const key = process.env.BACKHAUL_API_KEY;
  if (!key) throw new RunCliError('BACKHAUL_API_KEY is not set: `backhaul run` needs an API key with the write scope.', false);
  const deadline = Date.now() + timeoutS * 1000;

  /** One bounded API call; a problem answer or an unreachable server is a RunCliError. */
  const call = async (method: string, path: string, body?: unknown, waitS = 0): Promise<{ id: string; status: string }> => {
    const { apiCall, ApiUnreachable, problemLine } = await import('./cli-api.ts');
    // The long-poll's own length, plus time for a loaded server to answer.
    const a = await apiCall(method, path, { key, body, timeoutMs: (waitS + 30) * 1000 }).catch((e: unknown) => {
      throw e instanceof ApiUnreachable ? new RunCliError(e.message, true) : e;
    });
    if (!a.ok) throw new RunCliError(problemLine(method, path, a), a.status >= 500 || a.status === 429);
    return a.json;
  };

  const trigger: Record<string, boolean> = {};
  if (values['full-resync']) trigger.fullResync = true;
  if (values['dry-run']) trigger.dryRun = true;
  let run = await call('POST', `/v1/syncs/${encodeURIComponent(positionals[0])}/runs`, trigger);
  const terminal = ['succeeded', 'partially_succeeded', 'failed', 'cancelled'];
  let failures = 0;
  while (values.wait && !terminal.includes(run.status)) {
    const left = Math.ceil((deadline - Date.now()) / 1000);
    if (left <= 0) break;
    const waitS = Math.min(60, left);
    try {
      run = await call('GET', `/v1/runs/${encodeURIComponent(run.id)}?wait=${waitS}`, undefined, waitS);
      failures = 0;
    } catch (e) {
      // A restarting server or a dropped connection: try again a few times, backing off.
      if (!(e instanceof RunCliError) || !e.transient || ++failures > 5) throw e;
      process.stderr.write(`backhaul: ${e.message}; retrying\n`);
      await new Promise((r) => setTimeout(r, Math.min(deadline - Date.now(), 500 * 2 ** failures)));
    }
  }
  process.stdout.write(`${JSON.stringify(run, null, 2)}\n`);
  if (!values.wait) return;
  process.exitCode = run.status === 'succeeded' ? 0 : run.status === 'partially_succeeded' ? 2 : terminal.includes(run.status) ? 1 : 3;
}

/** `backhaul run` could not trigger or follow the run (exit 4); transient: worth retrying. */
class RunCliError extends Error {
  readonly transient: boolean;
  constructor(message: string, transient: boolean) {
    super(message);
    this.transient = transient;
  }
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(HELP);
    return;
  }
  if (command === 'run') return runCommand(rest);
  if (command === 'export' || command === 'plan' || command === 'apply') {
    const { declarativeCommand } = await import('./cli-declarative.ts');
    return declarativeCommand(command, rest);
  }
  const config = loadConfig();
  if (command === 'serve' || command === 'worker') return serveOrWork(command, rest, config);
  return databaseCommand(command, rest, argv, config);
}

main(process.argv.slice(2)).catch(async (e: unknown) => {
  const { EmbeddedDatabaseError } = await import('./db/embedded.ts');
  const err = e as NodeJS.ErrnoException;
  if ((e as { exitCode?: unknown }).exitCode !== undefined && (e as Error).name === 'DeclarativeCliError') {
    process.stderr.write(`backhaul: ${err.message}\n`);
    process.exit((e as { exitCode: number }).exitCode);
  }
  if (e instanceof RunCliError) {
    process.stderr.write(`backhaul: ${err.message}\n`);
    process.exit(4);
  }
  if (e instanceof ConfigError) {
    process.stderr.write(`${err.message}\n`);
    process.exit(2);
  }
  if (e instanceof StartupError || e instanceof EmbeddedDatabaseError || (err as { code?: string }).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
    process.stderr.write(`backhaul: ${err.message}\n`);
    process.exit(e instanceof StartupError || e instanceof EmbeddedDatabaseError ? 1 : 2);
  }
  if (err.code === 'EADDRINUSE') {
    process.stderr.write(`backhaul: ${err.message}: stop what uses it, or choose another port (PORT, BACKHAUL_METRICS_PORT).\n`);
    process.exit(1);
  }
  if (['ECONNREFUSED', 'ENOTFOUND', '28P01', '3D000', '28000'].includes(String(err.code))) {
    process.stderr.write(`backhaul: cannot use the database (${err.message}): check DATABASE_URL.\n`);
    process.exit(1);
  }
  process.stderr.write(`${err.stack ?? e}\n`);
  process.exit(1);
});
