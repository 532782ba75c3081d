import t from 'tap';
import fc from 'fast-check';
import { mapBatchAnswer, type SentInput } from '../../src/connectors/destinations/hubspot-results.ts';

// Tying HubSpot batch answers to rows without input indexes: by objectWriteTraceId, by the
// unique property's value, by record id, or not at all (never by position).

const lower = (v: string) => v.trim().toLowerCase();
const inputs: SentInput[] = [
  { row: 0, traceId: '0', id: 'a@x.com', idProperty: 'email' },
  { row: 1, traceId: '1', id: 'b@x.com', idProperty: 'email' },
  { row: 2, traceId: '2', id: 'c@x.com', idProperty: 'email' },
];

t.test('results without trace ids are tied by the idProperty value, compared with its equality', async (t) => {
  const m = mapBatchAnswer(inputs, { results: [{ id: '12', properties: { email: 'C@X.com' } }, { id: '10', properties: { email: 'a@x.com' } }] }, lower);
  t.same(m.outcomes.get(2), { status: 'succeeded', externalId: '12' });
  t.same(m.outcomes.get(0), { status: 'succeeded', externalId: '10' });
  t.same(m.unaccounted, [1]);
});

t.test('errors name their rows by trace id, by ids in context, or by the property value; the rest stay unattributed', async (t) => {
  const m = mapBatchAnswer(
    [...inputs, { row: 3, traceId: '3', id: '555' }],
    {
      results: [],
      errors: [
        { status: 'error', category: 'VALIDATION_ERROR', message: 'bad value', context: { objectWriteTraceId: ['1'] } },
        { status: 'error', category: 'OBJECT_NOT_FOUND', message: 'missing', context: { ids: ['A@x.com', '555'] } },
        { status: 'error', category: 'CONFLICT', message: 'dup', context: { email: ['c@x.com'] } },
        { status: 'error', category: 'RATE_LIMITS', message: 'who knows', context: {} },
      ],
    },
    lower,
  );
  t.match(m.outcomes.get(1), { status: 'rejected', code: 'hubspot_validation_error', message: 'bad value' });
  t.match(m.outcomes.get(0), { status: 'rejected', code: 'hubspot_object_not_found' });
  t.match(m.outcomes.get(3), { status: 'rejected', code: 'hubspot_object_not_found' }, 'a record id named in context.ids');
  t.match(m.outcomes.get(2), { status: 'rejected', code: 'hubspot_conflict' }, 'a unique property value named in context');
  t.same(m.unaccounted, []);
  t.equal(m.unattributed.length, 1);
});

t.test('two inputs naming the same record are not told apart by value', async (t) => {
  const twins: SentInput[] = [
    { row: 0, traceId: '0', id: 'a@x.com', idProperty: 'email' },
    { row: 1, traceId: '1', id: 'A@x.com', idProperty: 'email' },
  ];
  const m = mapBatchAnswer(twins, { results: [{ id: '1', properties: { email: 'a@x.com' } }] }, lower);
  t.same(m.unaccounted, [0, 1], 'neither is assumed');
});

t.test('property: whatever order HubSpot answers in, each row gets its own record id', async (t) => {
  fc.assert(
    fc.property(fc.uniqueArray(fc.emailAddress(), { minLength: 1, maxLength: 100, selector: (e) => e.toLowerCase() }), fc.boolean(), fc.integer(), (emails, withTrace, seed) => {
      const sent: SentInput[] = emails.map((e, i) => ({ row: i, traceId: String(i), id: e, idProperty: 'email' }));
      const results = emails.map((e, i) => ({ id: String(1000 + i), properties: { email: e.toLowerCase() }, ...(withTrace ? { objectWriteTraceId: String(i) } : {}) }));
      // Deterministic shuffle.
      let s = seed;
      for (let i = results.length - 1; i > 0; i--) {
        s = (s * 1103515245 + 12345) & 0x7fffffff;
        const j = s % (i + 1);
        [results[i], results[j]] = [results[j], results[i]];
      }
      const m = mapBatchAnswer(sent, { results }, lower);
      return m.unaccounted.length === 0 && emails.every((_, i) => (m.outcomes.get(i) as { externalId?: string }).externalId === String(1000 + i));
    }),
  );
});
