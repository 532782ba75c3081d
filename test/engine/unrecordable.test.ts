import t from 'tap';
import fc from 'fast-check';
import { mayBeUnrecordable, unrecordablePath } from '../../src/engine/identity.ts';
import { stringifyPayload } from '../../src/lib/json.ts';

// The staging fast path (query.ts) skips the walk for unrecordable strings when the payload's
// JSON text holds no escape that could be one. It must never skip a payload that holds one.

const char = fc.oneof(
  { weight: 6, arbitrary: fc.string({ unit: 'grapheme', maxLength: 3 }) },
  { weight: 1, arbitrary: fc.constantFrom('\u0000', '\ud800', '\udbff', '\udc00', '\udfff', '\ud83d\ude00', '\\u0000', '\\ud800', '\\', 'u0000') },
);
const text = fc.array(char, { maxLength: 4 }).map((xs) => xs.join(''));
const value = fc.letrec<{ v: unknown }>((tie) => ({
  v: fc.oneof({ depthSize: 'small' }, text, fc.integer(), fc.constant(null), fc.array(tie('v'), { maxLength: 3 }), fc.dictionary(text, tie('v'), { maxKeys: 3 })),
})).v;

t.test('a payload holding an unrecordable string is always walked (property)', async (t) => {
  fc.assert(
    fc.property(fc.dictionary(text, value, { maxKeys: 4 }), (payload) => {
      const json = stringifyPayload(payload);
      // No false negative: whenever the walk would find something, the text says "maybe".
      return unrecordablePath(payload) === null || mayBeUnrecordable(json);
    }),
    { numRuns: 5000 },
  );
  t.ok(mayBeUnrecordable(stringifyPayload({ a: 'x\u0000y' })), 'NUL in a value');
  t.ok(mayBeUnrecordable(stringifyPayload({ ['k\udc00']: 1 })), 'a lone surrogate in a key');
  t.notOk(mayBeUnrecordable(stringifyPayload({ a: 'émoji 😀', b: 'tab\tline\n' })), 'paired surrogates and control escapes are recordable');
});
