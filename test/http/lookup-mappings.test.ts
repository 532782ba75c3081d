import t from 'tap';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { modelBody, ok, pgConnection, syncBody } from '../helpers/http-fixtures.ts';

// Lookup mappings are accepted only on syncs whose destination type can look records up.

t.test('lookup mappings: accepted for HubSpot (with caseInsensitive / onMissing), refused with lookup_not_supported for a table destination', async (t) => {
  const h = await startTestBackhaul(t);
  const src = await ok(h.request('POST', '/v1/connections', { body: pgConnection('src') }));
  const hub = await ok(h.request('POST', '/v1/connections', { body: { slug: 'hub', name: 'HubSpot', type: 'hubspot', config: {}, secrets: { accessToken: 'pat-x' } } }));
  const model = await ok(h.request('POST', '/v1/models?validate=false', { body: modelBody('m', src.id) }));
  const toHub = await ok(h.request('POST', '/v1/syncs', { body: syncBody('to-hub', model.id, hub.id) }));
  const toPg = await ok(h.request('POST', '/v1/syncs', { body: syncBody('to-pg', model.id, src.id, { object: 'public.contacts' }) }));
  const lookup = { lookup: { object: 'owners', matchField: 'email', sourceColumn: 'email', resultField: 'id', caseInsensitive: true, onMissing: 'skip_field' } };

  const created = await h.request('POST', `/v1/syncs/${toHub.id}/mappings`, { body: { destinationField: 'hubspot_owner_id', source: lookup } });
  t.equal(created.status, 201, created.text);
  t.same(created.body.source, lookup, 'the options are kept');

  const refused = await h.request('POST', `/v1/syncs/${toPg.id}/mappings`, { body: { destinationField: 'owner', source: lookup } });
  t.equal(refused.status, 422);
  t.equal(refused.body.code, 'lookup_not_supported');
  t.same(refused.body.errors, [{ path: '/source/lookup', message: 'not supported by this destination' }]);
  const put = await h.request('PUT', `/v1/syncs/${toPg.id}/mappings`, { body: [{ destinationField: 'email', source: { column: 'email' } }, { destinationField: 'owner', source: lookup }] });
  t.equal(put.status, 422);
  t.same(put.body.errors, [{ path: '/1/source/lookup', message: 'not supported by this destination' }]);
  t.same((await h.request('GET', `/v1/syncs/${toPg.id}/mappings`)).body.data, [], 'nothing half-applied');
  const bad = await h.request('POST', `/v1/syncs/${toHub.id}/mappings`, { body: { destinationField: 'x', source: { lookup: { ...lookup.lookup, onMissing: 'guess' } } } });
  t.equal(bad.status, 400);
});
