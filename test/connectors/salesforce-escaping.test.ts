import t from 'tap';
import fc from 'fast-check';
import { SalesforceDestination } from '../../src/connectors/destinations/salesforce.ts';
import { startFakeSalesforce, type FakeSalesforce } from '../fakes/salesforce.ts';

// The kind of bug: a value that breaks the quoting of what we send. Any string must survive a SOQL
// literal (lookups, Id resolution) and a Bulk API CSV cell exactly; the fake parses both with its
// own strict parsers (SOQL escape sequences; RFC 4180 with LF), not with the connector's code.

let sf: FakeSalesforce;
t.before(async () => {
  sf = await startFakeSalesforce();
});
t.teardown(() => sf.close());
const open = () => new SalesforceDestination({ instanceUrl: sf.url, bulkPollIntervalMs: 2, bulkPollMaxIntervalMs: 5 }, { accessToken: sf.issueToken() }, { denyPrivateNetworks: false });
const text = fc.string({ unit: 'binary', minLength: 1, maxLength: 40 });

t.test('any string round-trips through a SOQL lookup', async (t) => {
  const d = open();
  await fc.assert(
    fc.asyncProperty(fc.uniqueArray(text, { minLength: 1, maxLength: 5 }), async (values) => {
      sf.records.get('User')!.clear();
      const ids = values.map((v, i) => sf.insert('User', { Username: `u${i}@corp`, Email: v }));
      const res = await d.lookup({ object: 'User', matchField: 'Email', resultField: 'Id', values });
      values.forEach((v, i) => {
        const got = res.get(v)?.map((m) => m.id);
        if (!got?.includes(ids[i])) throw new Error(`lookup of ${JSON.stringify(v)} found ${JSON.stringify(got)}`);
      });
    }),
    { numRuns: 60 },
  );
  t.pass('every value found its record');
});

t.test('any string round-trips through a Bulk API 2.0 CSV upload', async (t) => {
  const d = open();
  const cell = text.filter((s) => s !== '#N/A'); // Bulk API's documented null marker
  await fc.assert(
    fc.asyncProperty(fc.array(cell, { minLength: 1, maxLength: 5 }), async (names) => {
      const res = await d.write({
        object: 'Contact',
        operation: 'insert',
        matchField: 'External_Id__c',
        bulkThreshold: 1,
        rows: names.map((n, i) => ({ primaryKey: String(i), payload: { LastName: n, FirstName: `f${i}` } })),
      });
      res.results.forEach((r, i) => {
        const stored = r.status === 'succeeded' ? sf.records.get('Contact')!.get(r.externalId!)?.LastName : undefined;
        if (stored !== names[i]) throw new Error(`row ${i}: sent ${JSON.stringify(names[i])}, stored ${JSON.stringify(stored)} (${JSON.stringify(r)})`);
      });
    }),
    { numRuns: 40 },
  );
  t.pass('every value was stored exactly');
});
