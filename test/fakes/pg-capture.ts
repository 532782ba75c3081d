// A hostile "PostgreSQL server" that asks every client for its password in clear
// (AuthenticationCleartextPassword, https://www.postgresql.org/docs/current/protocol-flow.html)
// and records what it gets: the capture server of the secret-exfiltration tests.
import { createServer, type Server, type Socket } from 'node:net';

export interface PgCapture {
  port: number;
  /** Passwords received, in order. */
  passwords: string[];
  /** Connections accepted (whether or not they sent a password). */
  connections: number;
  close(): Promise<void>;
}

export async function startPgCapture(): Promise<PgCapture> {
  const cap: PgCapture = { port: 0, passwords: [], connections: 0, close: async () => {} };
  const sockets = new Set<Socket>();
  const server: Server = createServer((sock) => {
    cap.connections++;
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    let buf = Buffer.alloc(0);
    let started = false;
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        if (!started) {
          if (buf.length < 8) return;
          const len = buf.readInt32BE(0);
          if (buf.length < len) return;
          const code = buf.readInt32BE(4);
          buf = buf.subarray(len);
          if (code === 80877103 || code === 80877104) {
            sock.write('N'); // no TLS, no GSS encryption: carry on in clear
            continue;
          }
          started = true;
          const r = Buffer.alloc(9);
          r.write('R', 0);
          r.writeInt32BE(8, 1);
          r.writeInt32BE(3, 5); // AuthenticationCleartextPassword
          sock.write(r);
          continue;
        }
        if (buf.length < 5) return;
        const type = String.fromCharCode(buf[0]);
        const len = buf.readInt32BE(1);
        if (buf.length < 1 + len) return;
        const body = buf.subarray(5, 1 + len);
        buf = buf.subarray(1 + len);
        if (type === 'p') {
          cap.passwords.push(body.subarray(0, body.indexOf(0)).toString('utf8'));
          const fields = Buffer.from('SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed\0\0');
          const e = Buffer.alloc(5);
          e.write('E', 0);
          e.writeInt32BE(4 + fields.length, 1);
          sock.end(Buffer.concat([e, fields]));
          return;
        }
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cap.port = (server.address() as { port: number }).port;
  cap.close = () =>
    new Promise((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    });
  return cap;
}
