import t from 'tap';
import { salesforceBulkSync } from '../helpers/salesforce-bulk-sync.ts';

// PostgreSQL → Salesforce through the engine at 5,000 rows (SF_SYNC_ROWS to change): one Bulk API
// 2.0 job, then a 1% change through sObject Collections by Id, then mirror deletes by Id. The
// 100,000-row run is test/chaos/salesforce-100k.test.ts (too slow for npm test on a busy machine).

t.test('a large run goes through Bulk API 2.0; later runs address records by the Ids it returned', (t) => salesforceBulkSync(t, Number(process.env.SF_SYNC_ROWS ?? 5000)));
