import { Type, type Static } from '@sinclair/typebox';
import { and, eq, lt, sql } from 'drizzle-orm';
import { connections, oauthStates } from '../db/schema.ts';
import { getConnectorType } from '../connectors/registry.ts';
import { authorizationUrl, exchangeCode, newAuthorizationRequest, resolveOAuthClient, DEFAULT_OAUTH_TRANSPORT } from '../connectors/oauth/protocol.ts';
import { secretsFromTokens } from '../connectors/oauth/token-manager.ts';
import { AppError, BadRequestError, ConnectorError, UnprocessableError } from '../errors.ts';
import { sha256 } from '../lib/crypto.ts';
import { assertValid } from '../lib/validate.ts';
import { recordAudit } from './audit.ts';
import { requireScope } from './common.ts';
import { connectionView, type ConnectionService, type ConnectionViewT } from './connections.ts';
import type { Actor } from './context.ts';
import type { ServiceDeps } from './deps.ts';
import { mergeSecrets } from './oauth-store.ts';

// The OAuth 2.0 authorization-code flow with PKCE that connects a connection to a provider.
// `start` (an API call: a browser cannot send our bearer key on a redirect) keeps the state and
// the PKCE verifier in the control database, so that whichever instance receives the provider's
// redirect can finish it; `callback` consumes that row once, exchanges the code and stores the
// tokens as the connection's sealed secrets.

/** How long a started flow may take to come back (the user logs in and consents meanwhile). */
export const OAUTH_STATE_TTL_MS = 10 * 60_000;

export const OAuthStart = Type.Object(
  {
    returnUrl: Type.Optional(
      Type.String({ format: 'uri', maxLength: 2000, description: 'Where the browser goes when the flow completes; its origin must be in BACKHAUL_OAUTH_RETURN_ORIGINS' }),
    ),
  },
  { additionalProperties: false },
);
export const OAuthStarted = Type.Object(
  {
    authorizationUrl: Type.String({ description: "The provider's consent page, for a browser to open" }),
    expiresAt: Type.String({ format: 'date-time', description: 'The flow must complete before this' }),
  },
  { additionalProperties: false },
);
export type OAuthStartInput = Static<typeof OAuthStart>;

export interface OAuthCallbackQuery {
  state?: string;
  code?: string;
  error?: string;
  error_description?: string;
}

/** The outcome of a callback whose state was valid: the caller redirects to returnUrl or shows a page. */
export type OAuthCallbackResult =
  | { ok: true; connection: ConnectionViewT; returnUrl?: string }
  | { ok: false; error: AppError; connectionSlug: string; returnUrl?: string };

export class OAuthService {
  readonly #deps: ServiceDeps;
  readonly #connections: ConnectionService;

  constructor(deps: ServiceDeps, connections: ConnectionService) {
    this.#deps = deps;
    this.#connections = connections;
  }

  get #db() {
    return this.#deps.database.db;
  }

  /** The redirect URI registered with providers; `requestOrigin` is the fallback when none is configured. */
  redirectUri(requestOrigin: string): string {
    const o = this.#deps.oauth;
    if (o?.redirectUrl) return o.redirectUrl;
    return `${(o?.publicUrl ?? requestOrigin).replace(/\/+$/, '')}/v1/oauth/callback`;
  }

  /**
   * Starts the flow for a connection whose type supports OAuth (write scope). Errors: 422
   * `oauth_not_supported`, 422 `oauth_client_not_configured`, 400 `return_url_not_allowed`.
   */
  async start(actor: Actor, ref: string, input: OAuthStartInput, requestOrigin: string): Promise<Static<typeof OAuthStarted>> {
    requireScope(actor, 'write');
    assertValid(OAuthStart, input);
    const row = await this.#connections.row(this.#db, actor.workspaceId, ref);
    const spec = getConnectorType(row.type)?.oauth;
    if (!spec) {
      throw new UnprocessableError('oauth_not_supported', `Connections of type "${row.type}" are not connected through OAuth.`, {
        hint: "Set the connection's credentials in its secrets instead.",
      });
    }
    const client = resolveOAuthClient(spec, row.config as Record<string, unknown>, this.#connections.resolveSecrets(row), this.#deps.oauth?.clients ?? {});
    if (input.returnUrl !== undefined) this.#checkReturnUrl(input.returnUrl);
    const { state, codeVerifier, codeChallenge } = await newAuthorizationRequest();
    const redirectUri = this.redirectUri(requestOrigin);
    const expiresAt = new Date(Date.now() + OAUTH_STATE_TTL_MS);
    await this.#db.transaction(async (tx) => {
      // Housekeeping: flows nobody finished.
      await tx.delete(oauthStates).where(lt(oauthStates.expiresAt, sql`now() - interval '1 hour'`));
      await tx.insert(oauthStates).values({
        stateHash: sha256(state),
        workspaceId: actor.workspaceId,
        connectionId: row.id,
        codeVerifierSealed: this.#deps.secrets.seal({ codeVerifier }),
        redirectUri,
        returnUrl: input.returnUrl ?? null,
        keyId: actor.keyId,
        expiresAt,
      });
    });
    return { authorizationUrl: authorizationUrl(client, { state, codeChallenge, redirectUri }), expiresAt: expiresAt.toISOString() };
  }

  #checkReturnUrl(returnUrl: string): void {
    let origin: string;
    try {
      const u = new URL(returnUrl);
      if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new Error('scheme');
      origin = u.origin;
    } catch {
      throw new BadRequestError('return_url_not_allowed', `returnUrl "${returnUrl.slice(0, 200)}" is not an http(s) URL.`, { errors: [{ path: '/returnUrl', message: 'must be an http(s) URL' }] });
    }
    const allowed = this.#deps.oauth?.returnOrigins ?? [];
    if (!allowed.includes(origin)) {
      throw new BadRequestError('return_url_not_allowed', `returnUrl's origin ${origin} is not one of BACKHAUL_OAUTH_RETURN_ORIGINS (${allowed.join(', ') || 'none configured'}).`, {
        errors: [{ path: '/returnUrl', message: 'origin not allowed' }],
        hint: 'Add the origin to BACKHAUL_OAUTH_RETURN_ORIGINS, or omit returnUrl to get a confirmation page.',
      });
    }
  }

  /**
   * Completes a flow (no API key: the state authenticates it). Throws 400 `oauth_state_invalid` /
   * `oauth_state_expired` (nothing to redirect to); otherwise answers the outcome, including a
   * provider refusal (`oauth_denied`) or a failed code exchange, with the flow's returnUrl.
   */
  async callback(q: OAuthCallbackQuery): Promise<OAuthCallbackResult> {
    if (!q.state || q.state.length > 500) {
      throw new BadRequestError('oauth_state_invalid', 'The callback has no valid state parameter.', { hint: 'Start the flow again with POST /v1/connections/{ref}/oauth/start.' });
    }
    // Single use: the row is gone whatever happens next.
    const [st] = await this.#db.delete(oauthStates).where(eq(oauthStates.stateHash, sha256(q.state))).returning();
    if (!st) {
      throw new BadRequestError('oauth_state_invalid', 'This authorization request is unknown or was already used.', { hint: 'Start the flow again with POST /v1/connections/{ref}/oauth/start.' });
    }
    if (st.expiresAt.getTime() < Date.now()) {
      throw new BadRequestError('oauth_state_expired', `This authorization request expired (flows must complete within ${OAUTH_STATE_TTL_MS / 60_000} minutes).`, {
        hint: 'Start the flow again with POST /v1/connections/{ref}/oauth/start.',
      });
    }
    const returnUrl = st.returnUrl ?? undefined;
    const [row] = await this.#db.select().from(connections).where(and(eq(connections.id, st.connectionId), eq(connections.workspaceId, st.workspaceId)));
    if (!row) throw new BadRequestError('oauth_state_invalid', 'The connection of this authorization request no longer exists.');
    const fail = (error: AppError): OAuthCallbackResult => ({ ok: false, error, connectionSlug: row.slug, returnUrl });
    if (q.error || !q.code) {
      const why = q.error ? `${q.error}${q.error_description ? `: ${q.error_description.slice(0, 500)}` : ''}` : 'no authorization code';
      return fail(new BadRequestError('oauth_denied', `The provider did not grant access (${why}).`, { hint: 'Start the flow again and approve the access request.' }));
    }
    const spec = getConnectorType(row.type)?.oauth;
    if (!spec) return fail(new UnprocessableError('oauth_not_supported', `Connections of type "${row.type}" are not connected through OAuth.`));
    const actor: Actor = { workspaceId: st.workspaceId, keyId: st.keyId, scopes: ['write'], owner: false };
    try {
      const secrets = this.#connections.resolveSecrets(row);
      const client = resolveOAuthClient(spec, row.config as Record<string, unknown>, secrets, this.#deps.oauth?.clients ?? {});
      const { codeVerifier } = this.#deps.secrets.open(st.codeVerifierSealed) as { codeVerifier: string };
      const tokens = await exchangeCode(client, { code: q.code, codeVerifier, redirectUri: st.redirectUri }, { ...DEFAULT_OAUTH_TRANSPORT, denyPrivateNetworks: this.#deps.denyPrivateNetworks });
      const view = await this.#db.transaction(async (tx) => {
        const [cur] = await tx.select().from(connections).where(eq(connections.id, row.id)).for('update');
        const sealed = cur.secretsSealed ? this.#deps.secrets.open(cur.secretsSealed) : {};
        const merged = mergeSecrets(sealed, secretsFromTokens(tokens));
        const [updated] = await tx
          .update(connections)
          .set({ secretsSealed: this.#deps.secrets.seal(merged), secretNames: Object.keys(merged), authStatus: null, authError: null, version: cur.version + 1, updatedAt: new Date() })
          .where(eq(connections.id, row.id))
          .returning();
        await recordAudit(tx, actor, 'update', 'connection', row.id, ['secrets']);
        return connectionView(updated);
      });
      this.#connections.tokens.forget(row.id);
      return { ok: true, connection: view, returnUrl };
    } catch (e) {
      if (e instanceof ConnectorError) return fail(e);
      throw e;
    }
  }
}
