// A local HTTP receiver for webhooks, Slack incoming webhooks and the PagerDuty Events API v2:
// it records every request (headers and raw body) and answers what `respond` says.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingHttpHeaders } from 'node:http';

export interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  raw: string;
  body: any;
}

export interface Receiver {
  url: string;
  received: Received[];
  /** null: never answer (a hanging endpoint). */
  respond: (r: Received) => { status: number; body?: string } | null;
  /** Resolves once `pred` holds for the requests received so far. */
  waitFor(pred: (all: Received[]) => boolean, timeoutMs?: number): Promise<Received[]>;
  close(): Promise<void>;
}

export async function startReceiver(respond: Receiver['respond'] = () => ({ status: 200, body: 'ok' })): Promise<Receiver> {
  const rec: Receiver = {
    url: '',
    received: [],
    respond,
    async waitFor(pred, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      while (!pred(rec.received)) {
        if (Date.now() > deadline) throw new Error(`receiver: condition not met; got ${rec.received.length} requests: ${rec.received.map((r) => r.raw.slice(0, 200)).join('\n')}`);
        await new Promise((r) => setTimeout(r, 25));
      }
      return rec.received;
    },
    close: async () => {},
  };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      let body: unknown = raw;
      try {
        body = JSON.parse(raw);
      } catch {
        // not JSON
      }
      const r: Received = { path: req.url ?? '/', headers: req.headers, raw, body };
      rec.received.push(r);
      const out = rec.respond(r);
      if (!out) return;
      res.writeHead(out.status, { 'content-type': 'text/plain' });
      res.end(out.body ?? '');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  rec.url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  rec.close = () =>
    new Promise((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return rec;
}

/**
 * Standard Webhooks verification, written independently of Backhaul's signing code (it is the
 * README's snippet): HMAC-SHA256 keyed with the base64-decoded part of whsec_…, over
 * "<webhook-id>.<webhook-timestamp>.<raw body>", compared with each "v1,<base64>" signature.
 */
export function verifyWebhook(secret: string, headers: IncomingHttpHeaders, rawBody: string, toleranceSeconds = 300): boolean {
  const id = headers['webhook-id'] as string;
  const timestamp = headers['webhook-timestamp'] as string;
  const signatures = String(headers['webhook-signature'] ?? '');
  if (!id || !timestamp || Math.abs(Date.now() / 1000 - Number(timestamp)) > toleranceSeconds) return false;
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  const expected = createHmac('sha256', key).update(`${id}.${timestamp}.${rawBody}`).digest();
  return signatures.split(' ').some((s) => {
    const [version, sig] = s.split(',');
    const given = Buffer.from(sig ?? '', 'base64');
    return version === 'v1' && given.length === expected.length && timingSafeEqual(given, expected);
  });
}
