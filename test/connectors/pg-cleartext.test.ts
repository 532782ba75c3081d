import t from 'tap';
import { createServer, type Socket } from 'node:net';
import { PostgresSource } from '../../src/connectors/sources/postgres.ts';
import { expectCode } from '../fakes/databases.ts';

// Issue 13 item 4 (part): a server (or whatever answers on a repointed host/port) that asks for
// the password in clear text on a connection without TLS must not receive it. The fake speaks
// just enough of the PostgreSQL protocol (https://www.postgresql.org/docs/current/protocol-message-formats.html):
// it reads the StartupMessage, answers AuthenticationCleartextPassword ('R', code 3), records
// any PasswordMessage ('p'), then fails authentication.

interface Fake {
  port: number;
  passwords: string[];
  startups: number;
  close(): Promise<void>;
}

async function cleartextServer(): Promise<Fake> {
  const sockets = new Set<Socket>();
  const fake: Fake = { port: 0, passwords: [], startups: 0, close: async () => {} };
  const srv = createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    let buf = Buffer.alloc(0);
    let started = false;
    sock.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (!started) {
        if (buf.length < 4 || buf.length < buf.readUInt32BE(0)) return;
        buf = buf.subarray(buf.readUInt32BE(0));
        started = true;
        fake.startups++;
        const r = Buffer.alloc(9);
        r.write('R', 0);
        r.writeUInt32BE(8, 1);
        r.writeUInt32BE(3, 5); // AuthenticationCleartextPassword
        sock.write(r);
      }
      while (buf.length >= 5 && buf.length >= buf.readUInt32BE(1) + 1) {
        const len = buf.readUInt32BE(1);
        if (buf[0] === 0x70) fake.passwords.push(buf.subarray(5, len).toString('utf8').replace(/\0$/, ''));
        buf = buf.subarray(len + 1);
        // ErrorResponse: severity FATAL, code 28P01, message.
        const fields = Buffer.from('SFATAL\0C28P01\0Mpassword authentication failed\0\0');
        const e = Buffer.alloc(5);
        e.write('E', 0);
        e.writeUInt32BE(4 + fields.length, 1);
        sock.end(Buffer.concat([e, fields]));
      }
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  fake.port = (srv.address() as { port: number }).port;
  fake.close = async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => srv.close(r));
  };
  return fake;
}

const config = { host: '127.0.0.1', database: 'postgres', user: 'postgres', ssl: 'disable' as const, statementTimeoutMs: 30_000 };

t.test('a cleartext password request without TLS is refused; the password never leaves', async (t) => {
  const fake = await cleartextServer();
  t.teardown(() => fake.close());
  const s = new PostgresSource({ ...config, port: fake.port }, { password: 's3cret-do-not-send' });
  t.teardown(() => s.close());
  const e = await expectCode(t, s.test(), 'cleartext_password_refused');
  t.equal(e.classification, 'fatal');
  t.match(e.hint, /allowCleartextPassword/);
  await expectCode(t, s.preview('select 1', 1), 'cleartext_password_refused', 'the same for a preview');
  t.ok(fake.startups >= 2, 'the fake was reached');
  t.same(fake.passwords, [], 'no password message was sent');
});

t.test('allowCleartextPassword: true answers it (the user chose to)', async (t) => {
  const fake = await cleartextServer();
  t.teardown(() => fake.close());
  const s = new PostgresSource({ ...config, port: fake.port, allowCleartextPassword: true }, { password: 's3cret' });
  t.teardown(() => s.close());
  await expectCode(t, s.test(), 'auth_failed');
  t.same(fake.passwords, ['s3cret']);
});
