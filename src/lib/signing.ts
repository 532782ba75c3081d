import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

// Standard Webhooks (https://www.standardwebhooks.com): every message carries
//   webhook-id         the message id (the same across retries and redeliveries)
//   webhook-timestamp  Unix seconds of this attempt
//   webhook-signature  space-separated `v1,<base64 HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>`
// where the HMAC key is the base64 part of the `whsec_…` secret, decoded. During a secret
// rotation's grace period the header holds one signature per valid secret.

export const SECRET_PREFIX = 'whsec_';
/** A given secret: whsec_ + base64 of 24 to 64 bytes. */
export const SECRET_PATTERN = '^whsec_[A-Za-z0-9+/]{32,88}={0,2}$';

export function generateSecret(): string {
  return SECRET_PREFIX + randomBytes(32).toString('base64');
}

export function secretKey(secret: string): Buffer {
  return Buffer.from(secret.startsWith(SECRET_PREFIX) ? secret.slice(SECRET_PREFIX.length) : secret, 'base64');
}

/** Whether a user-given secret decodes to 24–64 bytes of key. */
export function isValidSecret(secret: string): boolean {
  if (!new RegExp(SECRET_PATTERN).test(secret)) return false;
  const n = secretKey(secret).length;
  return n >= 24 && n <= 64;
}

export function signature(secret: string, messageId: string, timestamp: number, body: string): string {
  return `v1,${createHmac('sha256', secretKey(secret)).update(`${messageId}.${timestamp}.${body}`).digest('base64')}`;
}

/** The three Standard Webhooks headers, signed with every given secret. */
export function signedHeaders(secrets: string[], messageId: string, timestamp: number, body: string): Record<string, string> {
  return {
    'webhook-id': messageId,
    'webhook-timestamp': String(timestamp),
    'webhook-signature': secrets.map((s) => signature(s, messageId, timestamp, body)).join(' '),
  };
}

/**
 * Verifies a message as a receiver would (what the README shows): one of the signatures matches
 * and the timestamp is within `toleranceSeconds` of now.
 */
export function verify(secret: string, headers: Record<string, string | string[] | undefined>, body: string, opts: { nowSeconds?: number; toleranceSeconds?: number } = {}): boolean {
  const id = String(headers['webhook-id'] ?? '');
  const ts = Number(headers['webhook-timestamp']);
  const sigs = String(headers['webhook-signature'] ?? '').split(' ');
  const now = opts.nowSeconds ?? Math.floor(Date.now() / 1000);
  if (!id || !Number.isInteger(ts) || Math.abs(now - ts) > (opts.toleranceSeconds ?? 300)) return false;
  const expected = Buffer.from(signature(secret, id, ts, body));
  return sigs.some((s) => {
    const b = Buffer.from(s);
    return b.length === expected.length && timingSafeEqual(b, expected);
  });
}
