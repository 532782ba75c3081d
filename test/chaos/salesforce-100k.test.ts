import t from 'tap';
import { salesforceBulkSync } from '../helpers/salesforce-bulk-sync.ts';
import { env } from './helpers.ts';

// Issue 14's "done when": a 100,000-row sync from PostgreSQL to the Salesforce fake goes through
// Bulk API 2.0 (one job), then a 1% change and mirror deletes address the records by the Ids it
// returned. CHAOS_SF_ROWS (default 100000, a multiple of 100) sets the size.

t.test('100,000 rows to Salesforce through one Bulk API 2.0 job, then 1% changed, then a delete', (t) => salesforceBulkSync(t, env('CHAOS_SF_ROWS', 100_000)));
