import { randomBytes } from 'node:crypto';

// Ids are `prefix_` + 10 chars of time (ms, Crockford base32) + 16 random chars. Sorting ids
// sorts by creation time, so an id is also a stable pagination cursor.
const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';

export const ID_PREFIXES = {
  workspace: 'ws',
  apiKey: 'key',
  connection: 'conn',
  model: 'mdl',
  sync: 'sync',
  mapping: 'map',
  run: 'run',
  webhookEndpoint: 'wh',
  webhookDelivery: 'whd',
  alertChannel: 'ach',
  alert: 'alr',
  webhookMessage: 'msg',
  runExchange: 'rex',
  audit: 'aud',
  sequence: 'seq',
  sequenceRun: 'seqrun',
} as const;

export type IdKind = keyof typeof ID_PREFIXES;

let lastTime = 0;
let lastRandom: number[] = [];

export function newId(kind: IdKind): string {
  let now = Date.now();
  let rand: number[];
  if (now <= lastTime) {
    // Same millisecond (or clock went back): increment the random part so ids stay monotonic.
    now = lastTime;
    rand = [...lastRandom];
    for (let i = rand.length - 1; i >= 0; i--) {
      if (rand[i] < 31) {
        rand[i]++;
        break;
      }
      rand[i] = 0;
    }
  } else {
    const bytes = randomBytes(16);
    rand = Array.from(bytes, (b) => b & 31);
    rand[0] &= 15; // headroom so increments within one millisecond never overflow
  }
  lastTime = now;
  lastRandom = rand;
  let time = '';
  let t = now;
  for (let i = 0; i < 10; i++) {
    time = ALPHABET[t % 32] + time;
    t = Math.floor(t / 32);
  }
  return `${ID_PREFIXES[kind]}_${time}${rand.map((r) => ALPHABET[r]).join('')}`;
}

export function looksLikeId(kind: IdKind, ref: string): boolean {
  return ref.startsWith(`${ID_PREFIXES[kind]}_`) && /^[a-z]+_[0-9a-z]{26}$/.test(ref);
}
