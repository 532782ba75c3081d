import { eq } from 'drizzle-orm';
import { runs as runsTable } from '../db/schema.ts';
import { NotFoundError, ValidationError } from '../errors.ts';
import { RUN_CHANNEL, TERMINAL, type RunStatus } from '../engine/status.ts';
import type { Actor } from './context.ts';
import { requireScope } from './common.ts';
import type { ServiceDeps } from './deps.ts';
import { runView, type RunRow, type RunService, type RunViewT } from './runs.ts';

// Long-polling a run until it is terminal (GET /v1/runs/{id}?wait=S, GraphQL run(id, wait:)).
// Waiters cost no polling: one LISTEN on the run channel per process (postgres.js keeps one
// dedicated connection for all of a pool's LISTENs), dispatched to waiters by run id. Each run
// being waited on is re-read once per notification about it, however many wait on it.

/** Longest wait a caller may ask for, in seconds (proxies commonly cut idle requests at 60-100 s). */
export const MAX_WAIT_SECONDS = 60;

export interface WaitResult<View = RunViewT> {
  run: View;
  /** Whether the run is in a terminal status (false: the wait timed out or the caller went away). */
  terminal: boolean;
  /**
   * What ended the wait: `read` (terminal when first read, or on the read after subscribing),
   * `notification` (a run notification, then a re-read), `timeout`, `released` (the caller went
   * away or the process is stopping).
   */
  endedBy: 'read' | 'notification' | 'timeout' | 'released';
}

interface ParkedWaiter<Row> {
  done(row: Row | undefined, by: WaitResult['endedBy']): void;
  /** Answers the run as last read (the caller went away, or the process is stopping). */
  release(): void;
}

/** The waiters of one run and its coalesced re-read. */
interface Group<Row> {
  waiters: Set<ParkedWaiter<Row>>;
  reading: boolean;
  again: boolean;
  /** Why the next read happens. */
  by: WaitResult['endedBy'];
}

/** What is waited for: runs, or sequence runs (src/domain/sequences.ts). */
export interface WaitSpec<Row, View> {
  /** The NOTIFY channel, and the payload's field naming the changed row. */
  channel: string;
  idField: string;
  /** In the actor's workspace; throws NotFoundError when absent. */
  load(workspaceId: string, id: string): Promise<Row>;
  /** By id alone (after a notification). */
  reread(id: string): Promise<Row | undefined>;
  isTerminal(row: Row): boolean;
  view(row: Row): View;
  notFound(id: string): Error;
}

/** Long-polls rows of one kind until terminal: one LISTEN per process and kind. */
export class Waiter<Row, View> {
  private readonly spec: WaitSpec<Row, View>;
  private readonly groups = new Map<string, Group<Row>>();
  private subscription?: Promise<{ unlisten(): Promise<void> }>;
  private subscribed = false;
  private closed = false;
  private readonly listen: ServiceDeps['database']['sql']['listen'];

  constructor(deps: ServiceDeps, spec: WaitSpec<Row, View>) {
    this.spec = spec;
    this.listen = deps.database.sql.listen.bind(deps.database.sql);
  }

  /** Waiters currently parked in this process (tests and metrics). */
  get size(): number {
    let n = 0;
    for (const g of this.groups.values()) n += g.waiters.size;
    return n;
  }

  /**
   * The run `id` of the actor's workspace once it is terminal, or as it is after `seconds`
   * (an integer, 1 to MAX_WAIT_SECONDS). A terminal run answers at once. `signal` (the caller
   * went away) removes the waiter and answers the run as last read.
   * Errors: ValidationError (`invalid_wait`), NotFoundError (another workspace's or no run),
   * ForbiddenError without the read scope.
   */
  async wait(actor: Actor, id: string, seconds: number, signal?: AbortSignal): Promise<WaitResult<View>> {
    const { isTerminal, view } = this.spec;
    requireScope(actor, 'read');
    if (!Number.isInteger(seconds) || seconds < 1 || seconds > MAX_WAIT_SECONDS) {
      throw new ValidationError(`wait must be a whole number of seconds from 1 to ${MAX_WAIT_SECONDS}.`, [{ path: '/wait', message: `must be an integer from 1 to ${MAX_WAIT_SECONDS}` }], 'invalid_wait');
    }
    let last: Row = await this.spec.load(actor.workspaceId, id);
    if (isTerminal(last) || signal?.aborted || this.closed) return { run: view(last), terminal: isTerminal(last), endedBy: isTerminal(last) ? 'read' : 'released' };
    await this.subscribe();

    return new Promise<WaitResult<View>>((resolve, reject) => {
      let group = this.groups.get(id);
      if (!group) this.groups.set(id, (group = { waiters: new Set(), reading: false, again: false, by: 'read' }));
      const g = group;
      const finish = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        g.waiters.delete(waiter);
        if (!g.waiters.size && this.groups.get(id) === g) this.groups.delete(id);
      };
      const waiter: ParkedWaiter<Row> = {
        done: (row, by) => {
          if (!row) {
            finish();
            return reject(this.spec.notFound(id));
          }
          last = row;
          if (!isTerminal(row)) return;
          finish();
          resolve({ run: view(row), terminal: true, endedBy: by });
        },
        release: () => {
          finish();
          resolve({ run: view(last), terminal: isTerminal(last), endedBy: 'released' });
        },
      };
      const onAbort = () => waiter.release();
      const timer = setTimeout(() => {
        finish();
        // One last read: the answer is the run as it is now, terminal or not.
        this.spec.load(actor.workspaceId, id).then((row) => resolve({ run: view(row), terminal: isTerminal(row), endedBy: 'timeout' }), reject);
      }, seconds * 1000);
      signal?.addEventListener('abort', onAbort, { once: true });
      g.waiters.add(waiter);
      if (signal?.aborted) return onAbort();
      // Re-read after subscribing: closes the race with a change committed before the LISTEN.
      this.refresh(id, 'read');
    });
  }

  /** Re-reads run `id` for its waiters; reads requested meanwhile coalesce into one more. */
  private refresh(id: string, by: WaitResult['endedBy']): void {
    const g = this.groups.get(id);
    if (!g) return;
    if (g.reading) {
      g.again = true;
      g.by = by;
      return;
    }
    g.by = by;
    g.reading = true;
    void (async () => {
      try {
        do {
          g.again = false;
          const by = g.by;
          let row: Row | undefined;
          try {
            row = await this.spec.reread(id);
          } catch {
            // The database is unreachable for now: keep waiting (the timeout reads once more).
            continue;
          }
          for (const w of [...g.waiters]) w.done(row, by);
        } while (g.again && g.waiters.size);
      } finally {
        g.reading = false;
      }
    })();
  }

  /** The process's one LISTEN on the run channel; a failed attempt is retried by the next waiter. */
  private async subscribe(): Promise<void> {
    this.subscription ??= this.listen(
        this.spec.channel,
        (payload) => {
          let runId: unknown;
          try {
            runId = (JSON.parse(payload) as Record<string, unknown>)[this.spec.idField];
          } catch {
            return;
          }
          if (typeof runId === 'string') this.refresh(runId, 'notification');
        },
        () => {
          // postgres.js re-subscribes after a lost connection and calls this again: what was
          // notified meanwhile was missed, so every waited run is read again.
          if (this.subscribed) for (const id of this.groups.keys()) this.refresh(id, 'notification');
          this.subscribed = true;
        },
      )
      .catch((e: unknown) => {
        this.subscription = undefined;
        throw e;
      });
    await this.subscription;
  }

  /** Process shutdown: answers every parked waiter with its run as last read, and stops listening. */
  async close(): Promise<void> {
    this.closed = true;
    for (const g of [...this.groups.values()]) for (const w of [...g.waiters]) w.release();
    const sub = this.subscription;
    this.subscription = undefined;
    this.subscribed = false;
    if (sub) await sub.then((s) => s.unlisten()).catch(() => {});
  }
}

/** Runs (GET /v1/runs/{id}?wait=, GraphQL run(id, wait:)). */
export class RunWaiter extends Waiter<RunRow, RunViewT> {
  constructor(deps: ServiceDeps, runs: RunService) {
    super(deps, {
      channel: RUN_CHANNEL,
      idField: 'runId',
      load: (workspaceId, id) => runs.row(deps.database.db, workspaceId, id),
      reread: async (id) => (await deps.database.db.select().from(runsTable).where(eq(runsTable.id, id)))[0],
      isTerminal: (r) => TERMINAL.has(r.status as RunStatus),
      view: runView,
      notFound: (id) => new NotFoundError('run', id),
    });
  }
}
