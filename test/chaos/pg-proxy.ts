import { createServer, connect, type Server, type Socket } from 'node:net';

// A TCP proxy between Backhaul and the shared PostgreSQL, so a test can take the control
// database away without stopping it (the server is shared by every test on the machine).
//
// cut(): every connection through the proxy is dropped — reset (RST, a failover or a crashed
// server) or closed (FIN, as a PostgreSQL shutting down closes its sessions) — and every new
// connection is reset at once until restore(): a client sees its queries fail and each
// reconnect attempt refused.

export interface PgProxy {
  /** DATABASE_URL through the proxy. */
  url: string;
  /** Connections accepted and forwarded so far (reconnects show up here). */
  forwarded: number;
  /** Connections refused while cut. */
  refused: number;
  readonly isCut: boolean;
  cut(how?: 'reset' | 'close'): void;
  restore(): void;
  close(): Promise<void>;
}

export async function startPgProxy(targetUrl: string): Promise<PgProxy> {
  const target = new URL(targetUrl);
  const targetPort = Number(target.port || 5432);
  const targetHost = target.hostname;
  const pairs = new Set<[Socket, Socket]>();
  let cut = false;
  const proxy: PgProxy = {
    url: '',
    forwarded: 0,
    refused: 0,
    get isCut() {
      return cut;
    },
    cut(how = 'reset') {
      cut = true;
      for (const [a, b] of pairs) {
        if (how === 'reset') {
          a.resetAndDestroy();
          b.resetAndDestroy();
        } else {
          a.destroy();
          b.destroy();
        }
      }
      pairs.clear();
    },
    restore() {
      cut = false;
    },
    close: async () => {},
  };
  const server: Server = createServer((client) => {
    client.on('error', () => {});
    if (cut) {
      proxy.refused++;
      client.resetAndDestroy();
      return;
    }
    proxy.forwarded++;
    const upstream = connect(targetPort, targetHost);
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    const drop = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', drop);
    upstream.on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  const u = new URL(targetUrl);
  u.hostname = '127.0.0.1';
  u.port = String(port);
  proxy.url = u.toString();
  proxy.close = () =>
    new Promise<void>((resolve) => {
      for (const [a, b] of pairs) (a.destroy(), b.destroy());
      pairs.clear();
      server.close(() => resolve());
    });
  return proxy;
}
