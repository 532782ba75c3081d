import t from 'tap';
import { suggestMappings, words } from '../../src/connectors/automap.ts';
import type { Column, DestinationField } from '../../src/connectors/types.ts';

const col = (name: string, type: Column['type'] = 'string'): Column => ({ name, type, nativeType: type });
const field = (name: string, type: DestinationField['type'] = 'string', identifier = false): DestinationField => ({ name, type, required: false, identifier });

// A users table as a warehouse exports it, and a CRM contact object.
const columns = [
  col('id', 'integer'), col('customer_email'), col('FirstName'), col('surname'), col('mobile'), col('organization'),
  col('postal-code'), col('country_code'), col('street'), col('town'), col('signup_date', 'timestamp'), col('is_active', 'boolean'),
  col('ltv', 'decimal'), col('notes'),
];
const fields = [
  field('email', 'string', true), field('firstname'), field('lastname'), field('phone'), field('company'), field('zip'),
  field('country'), field('address'), field('city'), field('createdate', 'timestamp'), field('hs_object_id'), field('annualrevenue', 'decimal'),
  field('is_active', 'date'),
];

t.test('normalises names', async (t) => {
  t.same(words('customerEmailAddress'), ['customer', 'email', 'address']);
  t.same(words('HTTPStatus-code'), ['http', 'status', 'code']);
  t.same(words('  postal.code '), ['postal', 'code']);
});

t.test('suggests mappings for a realistic schema', async (t) => {
  const s = suggestMappings(columns, fields, []);
  const by = Object.fromEntries(s.map((m) => [m.destinationField, m]));
  t.same(Object.fromEntries(s.map((m) => [m.destinationField, m.source.column])), {
    email: 'customer_email', firstname: 'FirstName', lastname: 'surname', phone: 'mobile', company: 'organization', zip: 'postal-code',
    country: 'country_code', address: 'street', city: 'town', createdate: 'signup_date', is_active: 'is_active',
  });
  t.equal(by.firstname.confidence, 0.95);
  t.equal(by.email.confidence, 0.85);
  t.equal(by.lastname.confidence, 0.75);
  t.match(by.lastname.reason, /synonym/);
  t.ok(by.is_active.confidence < 0.5, 'boolean → date lowers confidence');
  t.match(by.is_active.reason, /boolean → date/);
  t.same(s.map((m) => m.destinationField), fields.map((f) => f.name).filter((n) => by[n]), 'in field order');
  for (const m of s) t.ok(m.confidence > 0 && m.confidence <= 1);
});

t.test('each field once, already-mapped fields skipped, deterministic', async (t) => {
  const cols = [col('email'), col('Email'), col('email_address'), col('first_name')];
  const s = suggestMappings(cols, [field('email'), field('first_name')], [{ destinationField: 'first_name' }]);
  t.same(s, [{ destinationField: 'email', source: { column: 'email' }, confidence: 1, reason: 'same name' }]);
  t.same(suggestMappings([...cols].reverse(), [field('email')], []).map((m) => m.source.column), ['email'], 'exact match wins whatever the order');
  t.same(suggestMappings(columns, fields, []), suggestMappings(columns, fields, []));
  t.same(suggestMappings([col('foo')], [field('bar')], []), []);
});

t.test('Salesforce and GraphQL field names: custom-field suffix, address prefixes, Salesforce synonyms', async (t) => {
  const warehouse = [
    col('email'), col('first_name'), col('last_name'), col('external_id'), col('zip'), col('city'), col('street'),
    col('employee_count', 'integer'), col('unsubscribed', 'boolean'), col('lead_source'), col('loyalty_tier'),
  ];
  const contact = [
    field('Email', 'string', true), field('FirstName'), field('LastName'), field('External_Id__c', 'string', true), field('MailingPostalCode'),
    field('MailingCity'), field('MailingStreet'), field('NumberOfEmployees', 'integer'), field('HasOptedOutOfEmail', 'boolean'),
    field('LeadSource'), field('Loyalty_Tier__c'),
  ];
  const s = suggestMappings(warehouse, contact, []);
  t.same(Object.fromEntries(s.map((m) => [m.destinationField, m.source.column])), {
    Email: 'email', FirstName: 'first_name', LastName: 'last_name', External_Id__c: 'external_id', MailingPostalCode: 'zip',
    MailingCity: 'city', MailingStreet: 'street', NumberOfEmployees: 'employee_count', HasOptedOutOfEmail: 'unsubscribed',
    LeadSource: 'lead_source', Loyalty_Tier__c: 'loyalty_tier',
  });
  const by = Object.fromEntries(s.map((m) => [m.destinationField, m]));
  t.equal(by.Loyalty_Tier__c.confidence, 0.95, 'the __c suffix of a custom field does not lower the match');
  const gql = suggestMappings([col('first_name'), col('customer_email')], [field('firstName'), field('email')], []);
  t.same(gql.map((m) => [m.destinationField, m.source.column]), [['firstName', 'first_name'], ['email', 'customer_email']]);
});
