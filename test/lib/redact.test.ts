import t from 'tap';
import fc from 'fast-check';
import { REDACTED, secretRedactor } from '../../src/lib/redact.ts';
import { ConnectorError } from '../../src/errors.ts';

// The redactor finds a secret in every form a destination may echo it in: as is, JSON-escaped,
// URL/form-encoded, and inside the base64 of a longer string (HTTP Basic `user:pass`).

const formEncode = (s: string) => encodeURIComponent(s).replace(/%20/g, '+');
const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
const b64url = (s: string) => Buffer.from(s, 'utf8').toString('base64url');

/** The ways a secret shows up in a destination's echo. */
const FORMS: Record<string, (secret: string, user: string) => string> = {
  raw: (s) => s,
  json: (s) => JSON.stringify({ token: s }),
  jsonSlashes: (s) => JSON.stringify(s).replace(/\//g, '\\/'),
  jsonAscii: (s) => JSON.stringify(s).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`),
  uri: (s) => `https://x.test/cb?token=${encodeURIComponent(s)}&a=1`,
  uriLower: (s) => encodeURIComponent(s).replace(/%[0-9A-F]{2}/g, (m) => m.toLowerCase()),
  form: (s) => `grant_type=client_credentials&client_secret=${formEncode(s)}`,
  base64: (s) => `token=${b64(s)};`,
  basic: (s, u) => `authorization: Basic ${b64(`${u}:${s}`)}`,
  basicFormEncoded: (s, u) => `Basic ${b64(`${formEncode(u)}:${formEncode(s)}`)}`,
  base64url: (s, u) => `${b64url(`${u}:${s}`)}.sig`,
};

t.test('every form of a secret is redacted, wherever it sits (property)', async (t) => {
  const secret = fc.string({ unit: fc.constantFrom(...[...'abcXYZ0189+/=_-~!@#$%^&*() "\'\\:;.,<>?é€😀\n\t']), minLength: 4, maxLength: 40 }).filter((s) => s.trim().length >= 4);
  const filler = fc.string({ unit: fc.constantFrom(...[...'abc 012{}":,\n']), maxLength: 30 });
  fc.assert(
    fc.property(secret, fc.string({ minLength: 0, maxLength: 12 }), filler, filler, fc.constantFrom(...Object.keys(FORMS)), (s, user, pre, post, form) => {
      const echoed = FORMS[form](s, user);
      const out = secretRedactor([s]).text(`${pre}${echoed}${post}`);
      if (out.includes(echoed)) throw new Error(`form ${form} survived: ${out}`);
      if (out.includes(s)) throw new Error(`raw secret survived in ${form}: ${out}`);
      if (!out.includes(REDACTED)) throw new Error('nothing was redacted');
    }),
    { numRuns: 3000 },
  );
});

t.test('redaction keeps the text around a secret and replaces a whole base64 token', async (t) => {
  const r = secretRedactor(['hv-secret-2']);
  t.equal(r.text('header X-Api-Token was hv-secret-2, refused'), `header X-Api-Token was ${REDACTED}, refused`);
  const basic = `Basic ${b64('svc:pw-secret-1')}`;
  t.equal(secretRedactor(['pw-secret-1']).text(`{"authorization":"${basic}"}`), `{"authorization":"Basic ${REDACTED}"}`);
  t.equal(r.text('nothing secret here'), 'nothing secret here');
  t.equal(secretRedactor(['abc']).text('abc'), 'abc', 'values shorter than 4 characters are not redacted');
});

t.test('a redactor over changing values (a live OAuth token) covers the current ones', async (t) => {
  const live = ['client-secret-1'];
  const r = secretRedactor(() => live);
  t.equal(r.text('tok_live_9999'), 'tok_live_9999');
  live.push('tok_live_9999');
  t.equal(r.text('Bearer tok_live_9999'), `Bearer ${REDACTED}`);
});

t.test('headers, nested values and errors', async (t) => {
  const r = secretRedactor(['s3cr3t-value'], ['X-Custom-Auth']);
  t.same(r.headers({ Authorization: 'Bearer zzz', 'x-custom-auth': 'anything', 'X-Echo': 'was s3cr3t-value' }), {
    authorization: REDACTED,
    'x-custom-auth': REDACTED,
    'x-echo': `was ${REDACTED}`,
  });
  t.same(r.value({ a: ['s3cr3t-value', 1, null, { 's3cr3t-value': true }] }), { a: [REDACTED, 1, null, { [REDACTED]: true }] });
  const cause = new Error('socket said s3cr3t-value');
  const e = new ConnectorError('http_400', 'echo: s3cr3t-value', { classification: 'row', hint: 'try s3cr3t-value', cause });
  const same = r.error(e);
  t.equal(same, e, 'redacted in place: class and classification kept');
  t.equal(e.message, `echo: ${REDACTED}`);
  t.equal(e.hint, `try ${REDACTED}`);
  t.notMatch(e.stack, 's3cr3t-value');
  t.equal(cause.message, `socket said ${REDACTED}`);
});

t.test('long base64 bodies are scanned in linear time', async (t) => {
  const r = secretRedactor(['some-secret-value']);
  const body = 'A'.repeat(2_000_000);
  const started = process.hrtime.bigint();
  t.equal(r.text(body), body);
  // Not a wall-clock assertion on the machine: a quadratic scan of 2 MB would take hours, not seconds.
  t.ok(process.hrtime.bigint() - started < 60_000_000_000n);
});

t.test('head(s, n) is text(s) cut at n, wherever secrets and base64 runs lie around n (property)', async (t) => {
  // Bodies of filler (base64 letters among others, so runs reach across n), echoed secret forms
  // and long base64 runs holding a secret; n anywhere, mostly near a form. A head redacted from a
  // window must equal the head of the whole body redacted: no secret, nor part of one, nor the
  // start of a base64 run replaced further on, may show.
  const secret = fc.string({ unit: fc.constantFrom(...[...'abcXYZ0189+/=_-~!@#$%^&*() "\'\\:;.,<>?é€😀']), minLength: 4, maxLength: 24 }).filter((s) => s.trim().length >= 4);
  const filler = fc.string({ unit: fc.constantFrom(...[...'abQZ09+/=_- {}":,\n']), maxLength: 40 });
  const part = (s: string) =>
    fc.oneof(
      filler,
      fc.tuple(fc.constantFrom(...Object.keys(FORMS)), fc.string({ maxLength: 8 })).map(([form, user]) => FORMS[form](s, user)),
      fc.tuple(fc.integer({ min: 0, max: 120 }), fc.integer({ min: 0, max: 120 })).map(([a, b]) => b64(`${'x'.repeat(a)}${s}${'y'.repeat(b)}`)),
    );
  fc.assert(
    fc.property(
      secret.chain((s) => fc.tuple(fc.constant(s), fc.array(part(s), { maxLength: 12 }), fc.nat(), fc.integer({ min: -30, max: 30 }))),
      ([s, parts, pick, shift]) => {
        const body = parts.join('');
        const r = secretRedactor([s]);
        // n at a part boundary plus a shift (the edges of a form), or anywhere.
        const bounds = parts.map((_, i) => parts.slice(0, i).join('').length);
        const n = Math.max(0, (bounds.length ? bounds[pick % bounds.length] : pick % (body.length + 1)) + shift);
        const all = r.text(body);
        const h = r.head(body, n);
        if (h.text !== all.slice(0, n) || h.truncated !== all.length > n) {
          throw new Error(`head(${n}) = ${JSON.stringify(h)}, expected ${JSON.stringify({ text: all.slice(0, n), truncated: all.length > n })}`);
        }
      },
    ),
    { numRuns: Number(process.env.PROPERTY_RUNS ?? 3000) },
  );
  t.pass('3000 bodies');
});

t.test('head(s, n) reads only the head of a long body without secrets near it', async (t) => {
  const r = secretRedactor(['hv-secret-2']);
  const body = `${'{"email":"a@example.com","plan":"pro"},'.repeat(10_000)}"hv-secret-2"`;
  const h = r.head(body, 8192);
  t.same(h, { text: body.slice(0, 8192), truncated: true }, 'the head as is, marked truncated (the secret lies far after it)');
  t.same(r.head('short hv-secret-2', 8192), { text: `short ${REDACTED}`, truncated: false });
  t.same(r.head(`${'a'.repeat(10)}hv-secret-2${'b'.repeat(100)}`, 12), { text: `${'a'.repeat(10)}[R`, truncated: true }, 'a secret across the cut is redacted before the cut');
});
