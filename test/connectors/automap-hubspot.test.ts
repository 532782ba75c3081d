import t from 'tap';
import { suggestMappings } from '../../src/connectors/automap.ts';
import { hubspotType } from '../../src/connectors/destinations/hubspot-type.ts';
import type { Column } from '../../src/connectors/types.ts';
import { startFakeHubSpot } from '../fakes/hubspot.ts';

// Warehouse column names against HubSpot's property names (lower-case, no separators), with the
// fields as the HubSpot destination reports them.

t.test('typical warehouse columns map onto HubSpot contact and deal properties', async (t) => {
  const hs = await startFakeHubSpot({ tokens: ['pat'] });
  t.teardown(() => hs.close());
  hs.objects.get('contacts')!.properties.push({ name: 'mobilephone', type: 'string' }, { name: 'numberofemployees', type: 'number' }, { name: 'jobtitle', type: 'string' });
  hs.objects.get('deals')!.properties.push({ name: 'closedate', type: 'datetime' });
  const d = hubspotType.openDestination!({ baseUrl: hs.url }, { accessToken: 'pat' }, { denyPrivateNetworks: false });
  const col = (name: string, type: Column['type'] = 'string'): Column => ({ name, type, nativeType: type });
  const contacts = suggestMappings([col('user_id', 'integer'), col('email_address'), col('first_name'), col('last_name'), col('mobile_phone'), col('employee_count', 'integer'), col('job_title')], await d.fields('contacts'));
  t.same(Object.fromEntries(contacts.map((s) => [s.destinationField, s.source.column])), {
    email: 'email_address',
    firstname: 'first_name',
    lastname: 'last_name',
    num_employees: 'employee_count',
    mobilephone: 'mobile_phone',
    jobtitle: 'job_title',
  });
  t.ok(contacts.every((s) => s.confidence >= 0.6), 'all above the floor of a synonym with a type conversion');
  const deals = suggestMappings([col('deal_name'), col('deal_amount', 'decimal'), col('closed_at', 'timestamp')], await d.fields('deals'));
  t.same(Object.fromEntries(deals.map((s) => [s.destinationField, s.source.column])), { dealname: 'deal_name', amount: 'deal_amount', closedate: 'closed_at' });
});
