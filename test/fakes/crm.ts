// A local stand-in for a CRM's contacts API, shaped like HubSpot's batch endpoints:
//   POST   /contacts/batch/upsert  {"inputs":[…]} → 200 {"results":[{"ok":true}|{"ok":false,"error":"…"}]}
//   POST   /contacts/batch/create  same, refusing emails that already exist
//   POST   /contacts/batch/update  same, refusing emails that do not exist
//   DELETE /contacts/{email}       204, or 404 when absent
// Faults can be injected: 429 with Retry-After, 500/502/503, connection resets, slow answers,
// and per-row rejects. It counts every row it applied, so tests can see what was sent twice.
import { createServer, type Server } from 'node:http';

export interface CrmFaults {
  p429?: number;
  p5xx?: number;
  pReset?: number;
  /** Delay before answering (ms). */
  delayMs?: number;
  /** A row this returns a reason for is refused with that reason. */
  reject?: (row: Record<string, unknown>) => string | undefined;
  retryAfterSeconds?: number;
  /** Refuse a whole batch with 400 when any of its rows is bad (no per-row results). */
  strict?: boolean;
  /**
   * How many requests the 429/5xx/reset faults may hit; the fake answers normally once they are
   * spent (counted down here). Tests synchronise on this, never on a timer. Unset: no limit.
   */
  times?: number;
}

export interface CrmOptions {
  /** Match emails the way HubSpot and Salesforce do: trimmed and case-insensitive. */
  caseInsensitive?: boolean;
}

export interface FakeCrm {
  url: string;
  contacts: Map<string, Record<string, unknown>>;
  /** Times each email was applied (upserted/created/updated/deleted) successfully. */
  applied: Map<string, number>;
  /** Requests that reached the API (including faulted ones). */
  requests: number;
  /** Batches answered 200, each as the list of emails it carried. */
  answeredBatches: string[][];
  faults: CrmFaults;
  /** Called when a batch arrives, before it is applied (tests use it to pause or kill). */
  onBatch?: (emails: string[]) => void | Promise<void>;
  /** Called before a delete is applied, with the email as sent. */
  onDelete?: (email: string) => void;
  /** Every delete applied, in order, as the record's key. */
  deleted: string[];
  /** The record key of an email (normalised when case-insensitive). */
  key(email: string): string;
  random: () => number;
  close(): Promise<void>;
}

export async function startFakeCrm(faults: CrmFaults = {}, opts: CrmOptions = {}): Promise<FakeCrm> {
  let seed = 42;
  const crm: FakeCrm = {
    url: '',
    deleted: [],
    key: (email) => (opts.caseInsensitive ? email.trim().toLowerCase() : email),
    contacts: new Map(),
    applied: new Map(),
    requests: 0,
    answeredBatches: [],
    faults,
    // Deterministic pseudo-random faults (reproducible runs).
    random: () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed / 0x7fffffff;
    },
    close: async () => {},
  };
  const count = (email: string) => crm.applied.set(email, (crm.applied.get(email) ?? 0) + 1);

  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      crm.requests++;
      const f = crm.faults;
      const send = (status: number, body?: unknown, headers: Record<string, string> = {}) => {
        if (res.destroyed) return;
        res.writeHead(status, { 'content-type': 'application/json', ...headers });
        res.end(body === undefined ? '' : JSON.stringify(body));
      };
      if (f.delayMs) await new Promise((r) => setTimeout(r, f.delayMs));
      const r = crm.random();
      // Which fault this request gets (none once `times` is spent).
      const fault = f.times !== undefined && f.times <= 0 ? undefined
        : f.pReset && r < f.pReset ? 'reset'
        : f.p429 && r < (f.pReset ?? 0) + f.p429 ? '429'
        : f.p5xx && r < (f.pReset ?? 0) + (f.p429 ?? 0) + f.p5xx ? '5xx'
        : undefined;
      if (fault && f.times !== undefined) f.times--;
      if (fault === 'reset') return req.socket.destroy();
      if (fault === '429') return send(429, { message: 'rate limit exceeded' }, { 'retry-after': String(f.retryAfterSeconds ?? 0) });
      if (fault === '5xx') return send([500, 502, 503][Math.floor(crm.random() * 3)], { message: 'internal error' });

      const url = new URL(req.url ?? '/', 'http://x');
      const body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : undefined;
      const batch = /^\/contacts\/batch\/(upsert|create|update)$/.exec(url.pathname);
      if (batch && req.method === 'POST') {
        const inputs = (body as { inputs: Record<string, unknown>[] }).inputs;
        const emails = inputs.map((i) => String(i.email));
        await crm.onBatch?.(emails);
        if (f.strict) {
          const bad = inputs.findIndex((row) => f.reject?.(row));
          if (bad >= 0) return send(400, { message: `record ${bad}: ${f.reject!(inputs[bad])}` });
        }
        const results = inputs.map((row) => {
          const email = crm.key(String(row.email));
          const why = f.reject?.(row);
          if (why) return { ok: false, error: why };
          const exists = crm.contacts.has(email);
          if (batch[1] === 'create' && exists) return { ok: false, error: `contact ${email} already exists` };
          if (batch[1] === 'update' && !exists) return { ok: false, error: `contact ${email} does not exist` };
          crm.contacts.set(email, { ...(crm.contacts.get(email) ?? {}), ...row });
          count(email);
          return { ok: true };
        });
        crm.answeredBatches.push(emails);
        return send(200, { results });
      }
      const one = /^\/contacts\/([^/]+)$/.exec(url.pathname);
      if (one && req.method === 'DELETE') {
        const email = crm.key(decodeURIComponent(one[1]));
        crm.onDelete?.(decodeURIComponent(one[1]));
        if (crm.contacts.delete(email)) crm.deleted.push(email);
        else return send(404, { message: `contact ${email} not found` });
        count(email);
        return send(204);
      }
      return send(404, { message: `no route ${req.method} ${url.pathname}` });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  crm.url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  crm.close = () =>
    new Promise((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return crm;
}

/** The HTTP destination config for this CRM. */
export function crmConnectionConfig(url: string, opts: CrmOptions = {}) {
  const results = { pointer: '/results', okField: 'ok', errorField: 'error' };
  const batch = (path: string) => ({ method: 'POST', path, mode: 'batch', batchKey: 'inputs', results });
  return {
    baseUrl: url,
    maxBatchSize: 1000,
    timeoutMs: 2000,
    objects: [
      {
        name: 'contacts',
        fields: [
          { name: 'email', type: 'string', required: true, identifier: true, ...(opts.caseInsensitive ? { equality: 'case_insensitive' } : {}) },
          { name: 'name', type: 'string' },
          { name: 'age', type: 'integer' },
        ],
        operations: {
          insert: batch('/contacts/batch/create'),
          update: batch('/contacts/batch/update'),
          upsert: batch('/contacts/batch/upsert'),
          delete: { method: 'DELETE', path: '/contacts/{{email}}', mode: 'row' },
        },
      },
    ],
  };
}
