import { ConnectorError } from '../../errors.ts';
import type { HttpResponse } from '../../lib/http-client.ts';
import { normaliseLookupKey, type LookupMatch, type LookupRequest } from '../types.ts';
import { jsonPointer, parseJson } from './http-response.ts';

// Lookups for the generic HTTP destination: GET an endpoint that lists the destination's records
// (all of them, or those matching one value through a query parameter) and follow its pagination:
// a cursor in the body, an RFC 8288 `Link: <…>; rel="next"` header, or a page number.

export type HttpLookupPagination =
  | { type: 'none' }
  | { type: 'cursor'; cursorPointer: string; cursorParam: string }
  | { type: 'link' }
  | { type: 'page'; pageParam: string; firstPage?: number; pageSizeParam?: string; pageSize?: number };

export interface HttpLookupConfig {
  /** The name lookup mappings use as `object`. */
  object: string;
  /** GET path relative to baseUrl (may carry a query string). */
  path: string;
  /** Query parameter carrying the value looked up; absent: list every record once per run and match here. */
  valueParam?: string;
  /** JSON pointer to the array of records in a page (default: the body is the array). */
  recordsPointer?: string;
  /** Field (or JSON pointer) of a record holding its id (default `id`). */
  idField?: string;
  pagination?: HttpLookupPagination;
  /** Safety stop: pages read for one listing (default 1000). */
  maxPages?: number;
}

const name = { type: 'string', minLength: 1, maxLength: 200 };
/** JSON Schema of the HTTP destination's `lookups` config. */
export const httpLookupsSchema = {
  type: 'array',
  maxItems: 100,
  description: 'Endpoints that find destination records for lookup mappings',
  items: {
    type: 'object',
    additionalProperties: false,
    required: ['object', 'path'],
    properties: {
      object: name,
      path: { type: 'string', minLength: 1, maxLength: 2000 },
      valueParam: name,
      recordsPointer: { type: 'string', maxLength: 500 },
      idField: name,
      maxPages: { type: 'integer', minimum: 1, maximum: 100_000, default: 1000 },
      pagination: {
        oneOf: [
          { type: 'object', additionalProperties: false, required: ['type'], properties: { type: { const: 'none' } } },
          { type: 'object', additionalProperties: false, required: ['type'], properties: { type: { const: 'link' } } },
          {
            type: 'object',
            additionalProperties: false,
            required: ['type', 'cursorPointer', 'cursorParam'],
            properties: { type: { const: 'cursor' }, cursorPointer: { type: 'string', maxLength: 500 }, cursorParam: name },
          },
          {
            type: 'object',
            additionalProperties: false,
            required: ['type', 'pageParam'],
            properties: { type: { const: 'page' }, pageParam: name, firstPage: { type: 'integer', minimum: 0, default: 1 }, pageSizeParam: name, pageSize: { type: 'integer', minimum: 1, maximum: 10_000 } },
          },
        ],
      },
    },
  },
} as const;

/** The URL of rel="next" in an RFC 8288 Link header. */
export function nextLink(header: string | undefined): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(/,(?=\s*<)/)) {
    const m = /^\s*<([^>]*)>\s*;(.*)$/.exec(part);
    if (m && /(^|;)\s*rel\s*=\s*"?([^";]*\s)?next(\s[^";]*)?"?\s*(;|$)/i.test(m[2])) return m[1];
  }
  return undefined;
}

const field = (rec: unknown, f: string): unknown => (f.startsWith('/') ? jsonPointer(rec, f) : (rec as Record<string, unknown> | null)?.[f]);

export class HttpLookup {
  readonly #configs: Map<string, HttpLookupConfig>;
  readonly #baseUrl: string;
  readonly #get: (url: string, signal?: AbortSignal) => Promise<HttpResponse>;
  /** Full listings, per lookup object, for the connector's lifetime (one run). */
  readonly #listings = new Map<string, Promise<unknown[]>>();

  constructor(configs: HttpLookupConfig[], baseUrl: string, get: (url: string, signal?: AbortSignal) => Promise<HttpResponse>) {
    this.#configs = new Map(configs.map((c) => [c.object, c]));
    this.#baseUrl = baseUrl.replace(/\/+$/, '');
    this.#get = get;
  }

  get configured(): boolean {
    return this.#configs.size > 0;
  }

  /** See DestinationConnector.lookup. Throws ConnectorError fatal `lookup_not_configured` for an unknown object. */
  async lookup(req: LookupRequest): Promise<Map<string, LookupMatch[]>> {
    const c = this.#configs.get(req.object);
    if (!c) {
      throw new ConnectorError('lookup_not_configured', `No lookup endpoint is configured for "${req.object}" on this HTTP connection.`, {
        classification: 'fatal',
        hint: 'Add an entry for it to config.lookups (path, pagination, recordsPointer).',
      });
    }
    // An entry per requested value, as given, listing every matching record.
    const out = new Map<string, LookupMatch[]>();
    const key = (v: string) => normaliseLookupKey(v, req.caseInsensitive);
    const wanted = new Map<string, string[]>();
    for (const v of req.values) {
      out.set(v, []);
      wanted.set(key(v), [...(wanted.get(key(v)) ?? []), v]);
    }
    const take = (records: unknown[]) => {
      for (const rec of records) {
        const m = field(rec, req.matchField);
        if (m === null || m === undefined || typeof m === 'object') continue;
        const id = field(rec, c.idField ?? 'id');
        const idText = id === null || id === undefined ? undefined : String(id);
        for (const v of wanted.get(key(String(m))) ?? []) {
          const list = out.get(v)!;
          if (idText === undefined || !list.some((x) => x.id === idText)) list.push({ ...(idText !== undefined ? { id: idText } : {}), value: field(rec, req.resultField) ?? null });
        }
      }
    };
    if (c.valueParam) {
      for (const v of new Set(req.values)) take(await this.#list(c, { [c.valueParam]: v }, req.signal));
    } else {
      let all = this.#listings.get(c.object);
      if (!all) {
        all = this.#list(c, {}, req.signal);
        this.#listings.set(c.object, all);
        all.catch(() => this.#listings.delete(c.object));
      }
      take(await all);
    }
    return out;
  }

  async #list(c: HttpLookupConfig, params: Record<string, string>, signal?: AbortSignal): Promise<unknown[]> {
    const p = c.pagination ?? { type: 'none' };
    const records: unknown[] = [];
    const first = new URL(`${this.#baseUrl}/${c.path.replace(/^\/+/, '')}`);
    for (const [k, v] of Object.entries(params)) first.searchParams.set(k, v);
    if (p.type === 'page' && p.pageSizeParam && p.pageSize) first.searchParams.set(p.pageSizeParam, String(p.pageSize));
    let page = p.type === 'page' ? (p.firstPage ?? 1) : 0;
    let url: URL | undefined = first;
    const max = c.maxPages ?? 1000;
    for (let n = 0; url; n++) {
      if (n >= max) {
        throw new ConnectorError('lookup_too_many_pages', `The lookup of "${c.object}" read ${max} pages without reaching the end.`, { classification: 'fatal', hint: 'Raise maxPages for this lookup, or use valueParam to ask for one value at a time.' });
      }
      if (p.type === 'page') url.searchParams.set(p.pageParam, String(page));
      const res = await this.#get(url.toString(), signal);
      if (res.status < 200 || res.status >= 300) {
        throw new ConnectorError(res.status === 404 ? 'lookup_not_found_endpoint' : `http_${res.status}`, `The lookup endpoint ${url.origin}${url.pathname} answered ${res.status}.`, {
          classification: 'fatal',
          hint: `Check config.lookups' path for "${c.object}".`,
        });
      }
      const body = parseJson(res.body);
      const items = c.recordsPointer ? jsonPointer(body, c.recordsPointer) : body;
      if (!Array.isArray(items)) {
        throw new ConnectorError('invalid_response', `Expected an array of records at "${c.recordsPointer ?? ''}" in the lookup response of ${url.origin}${url.pathname}.`, {
          classification: 'fatal',
          hint: 'Fix recordsPointer (a JSON pointer such as /data) for this lookup.',
        });
      }
      records.push(...items);
      url = this.#next(p, url, res, body, items.length);
      page++;
    }
    return records;
  }

  #next(p: HttpLookupPagination, url: URL, res: HttpResponse, body: unknown, count: number): URL | undefined {
    switch (p.type) {
      case 'cursor': {
        const cursor = jsonPointer(body, p.cursorPointer);
        if (cursor === null || cursor === undefined || cursor === '' || cursor === false) return undefined;
        const next = new URL(url);
        next.searchParams.set(p.cursorParam, String(cursor));
        return next;
      }
      case 'link': {
        const link = nextLink(res.headers.link);
        if (!link) return undefined;
        const next = new URL(link, url);
        // Links are followed on the configured host only.
        if (next.origin !== new URL(this.#baseUrl).origin) {
          throw new ConnectorError('unexpected_redirect', `The lookup's next page is on another host (${next.origin}); it is not followed.`, { classification: 'fatal', hint: 'Point baseUrl at the host that serves every page.' });
        }
        return next;
      }
      case 'page':
        return count === 0 || (p.pageSize !== undefined && count < p.pageSize) ? undefined : new URL(url);
      default:
        return undefined;
    }
  }
}
