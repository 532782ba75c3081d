import type { Column, ColumnType, DestinationField } from './types.ts';

// Suggests column → field mappings by name: normalised names, entity prefixes (customer_email →
// email) and synonym groups, with confidence lowered when the types do not fit. Deterministic:
// the same inputs always give the same suggestions in the same order.

export interface MappingSuggestion {
  destinationField: string;
  source: { column: string };
  /** 0..1 */
  confidence: number;
  reason: string;
}

const SYNONYMS: string[][] = [
  ['email', 'emailaddress', 'email_address', 'e_mail', 'mail', 'email_addr', 'work_email'],
  ['phone', 'phone_number', 'phonenumber', 'mobile', 'cell', 'tel', 'telephone'],
  // HubSpot property names (lower-case, no separators).
  ['mobile_phone', 'mobilephone', 'mobile_number', 'cell_phone'],
  ['close_date', 'closedate', 'closed_at', 'close_at'],
  ['deal_name', 'dealname', 'opportunity_name'],
  ['amount', 'deal_amount', 'deal_value', 'opportunity_amount'],
  ['lifecycle_stage', 'lifecyclestage', 'lifecycle'],
  ['industry', 'sector', 'vertical'],
  ['first_name', 'firstname', 'given_name', 'fname', 'forename', 'first'],
  ['last_name', 'lastname', 'surname', 'family_name', 'lname', 'last'],
  ['full_name', 'fullname', 'name', 'display_name', 'contact_name'],
  ['company', 'company_name', 'organization', 'organisation', 'org', 'org_name', 'organization_name', 'account_name', 'employer'],
  ['zip', 'zipcode', 'zip_code', 'postal_code', 'postcode', 'post_code', 'postalcode'],
  ['country', 'country_code', 'country_name', 'nation'],
  ['address', 'street', 'street_address', 'address1', 'address_line1', 'address_line_1', 'addr'],
  ['city', 'town', 'locality'],
  ['state', 'region', 'province', 'state_code'],
  ['created_at', 'created', 'created_on', 'signup_date', 'signed_up_at', 'createdate', 'create_date', 'date_created', 'registered_at'],
  ['updated_at', 'updated', 'updated_on', 'modified_at', 'last_modified', 'lastmodifieddate', 'date_modified'],
  ['website', 'url', 'web_site', 'homepage', 'domain'],
  ['title', 'job_title', 'jobtitle', 'position'],
  ['id', 'external_id', 'externalid', 'uid', 'identifier'],
  ['birthday', 'birth_date', 'birthdate', 'date_of_birth', 'dob'],
  ['revenue', 'annual_revenue', 'arr', 'mrr'],
  ['language', 'lang', 'locale'],
  ['timezone', 'time_zone', 'tz'],
  // Salesforce / CRM standard fields.
  ['employees', 'number_of_employees', 'numberofemployees', 'employee_count', 'num_employees', 'headcount', 'company_size'],
  ['email_opt_out', 'has_opted_out_of_email', 'hasoptedoutofemail', 'unsubscribed', 'opted_out', 'email_unsubscribed', 'do_not_email'],
  ['lead_source', 'leadsource', 'source', 'acquisition_channel', 'signup_source'],
  ['description', 'notes', 'note', 'comments', 'about'],
];

const ENTITY_PREFIXES = [
  'customer', 'cust', 'user', 'usr', 'contact', 'account', 'client', 'person', 'member', 'lead', 'primary', 'hs', 'sf',
  // Salesforce compound address fields (MailingCity, BillingPostalCode, …).
  'mailing', 'billing', 'shipping', 'other',
];

/** snake_case words: splits camelCase, kebab, spaces and punctuation. */
export function words(name: string): string[] {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1_$2')
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter(Boolean);
}

const canonicalOf = new Map<string, string>();
for (const group of SYNONYMS) for (const s of group) canonicalOf.set(s.replace(/_/g, ''), group[0]);

interface Forms {
  exact: string;
  snake: string;
  compact: string;
  stripped: string;
  canonical?: string;
}

function forms(name: string): Forms {
  // A Salesforce custom field's API name ends in __c (Loyalty_Tier__c): the suffix is not part of its name.
  const w = words(name.replace(/__c$/i, ''));
  const snake = w.join('_');
  const rest = w.length > 1 && ENTITY_PREFIXES.includes(w[0]) ? w.slice(1) : w;
  const stripped = rest.join('');
  return { exact: name, snake, compact: w.join(''), stripped, canonical: canonicalOf.get(w.join('')) ?? canonicalOf.get(stripped) };
}

/** 1 when the column's values fit the field as they are, lower when they must be converted or likely do not fit. */
function typeFit(col: ColumnType, field: ColumnType): number {
  if (col === field) return 1;
  if (field === 'string' || field === 'json') return 0.9;
  const ok: Record<string, ColumnType[]> = {
    integer: ['decimal'],
    decimal: ['integer'],
    timestamp: ['date'],
    date: ['timestamp'],
    string: ['integer', 'decimal', 'boolean', 'timestamp', 'date', 'json'],
  };
  if (ok[col]?.includes(field)) return 0.85;
  if (col === 'string') return 0.7; // may parse, may not
  return 0.4;
}

function nameScore(c: Forms, f: Forms): [number, string] | undefined {
  if (c.exact === f.exact) return [1, 'same name'];
  if (c.snake === f.snake || c.compact === f.compact) return [0.95, 'same name, different case or separators'];
  if (c.stripped === f.stripped) return [0.85, 'same name without an entity prefix'];
  if (c.canonical && c.canonical === f.canonical) return [0.75, `synonyms ("${c.canonical}")`];
  return undefined;
}

export function suggestMappings(columns: Column[], fields: DestinationField[], existing: { destinationField: string }[] = []): MappingSuggestion[] {
  const taken = new Set(existing.map((e) => e.destinationField));
  const cols = columns.map((c, i) => ({ c, i, f: forms(c.name) }));
  const candidates: { field: number; col: number; confidence: number; reason: string }[] = [];
  fields.forEach((field, fi) => {
    if (taken.has(field.name)) return;
    const ff = forms(field.name);
    for (const { c, i, f } of cols) {
      const s = nameScore(f, ff);
      if (!s) continue;
      const fit = typeFit(c.type, field.type);
      const confidence = Math.round(s[0] * fit * 100) / 100;
      const reason = fit < 1 ? `${s[1]}; type ${c.type} → ${field.type}` : s[1];
      candidates.push({ field: fi, col: i, confidence, reason });
    }
  });
  // Best pairs first; ties broken by field then column order. Each field and each column is used once.
  candidates.sort((a, b) => b.confidence - a.confidence || a.field - b.field || a.col - b.col);
  const usedFields = new Set<number>();
  const usedCols = new Set<number>();
  const chosen: typeof candidates = [];
  for (const c of candidates) {
    if (usedFields.has(c.field) || usedCols.has(c.col)) continue;
    usedFields.add(c.field);
    usedCols.add(c.col);
    chosen.push(c);
  }
  chosen.sort((a, b) => a.field - b.field);
  return chosen.map((c) => ({ destinationField: fields[c.field].name, source: { column: columns[c.col].name }, confidence: c.confidence, reason: c.reason }));
}
