import t from 'tap';
import { resolveOAuthClient, authorizationUrl, refreshAccessToken } from '../../src/connectors/oauth/protocol.ts';
import { salesforceType } from '../../src/connectors/destinations/salesforce-type.ts';
import { startFakeSalesforce } from '../fakes/salesforce.ts';
import type { OAuthProviderSpec } from '../../src/connectors/types.ts';
import { loadConfig } from '../../src/config.ts';

// Which OAuth client and endpoints a connection gets, and where Backhaul's own client secret may go.

const spec: OAuthProviderSpec = {
  name: 'acme',
  authorizeUrl: 'https://login.acme.com/authorize',
  tokenUrl: 'https://login.acme.com/token',
  scopes: ['api', 'refresh_token'],
  clientAuth: 'body',
  trustedTokenHosts: ['test.acme.com', '.my.acme.com'],
};
const settings = { acme: { clientId: 'global-id', clientSecret: 'global-secret' } };

t.test("Backhaul's client: default endpoints, trusted overrides only", async (t) => {
  t.match(resolveOAuthClient(spec, {}, {}, settings), { clientId: 'global-id', clientSecret: 'global-secret', tokenUrl: spec.tokenUrl, scopes: ['api', 'refresh_token'] });
  t.match(resolveOAuthClient(spec, { oauth: { tokenUrl: 'https://test.acme.com/token' } }, {}, settings), { tokenUrl: 'https://test.acme.com/token', clientSecret: 'global-secret' }, 'a trusted sandbox host');
  t.match(resolveOAuthClient(spec, { oauth: { tokenUrl: 'https://corp.my.acme.com/token' } }, {}, settings), { clientSecret: 'global-secret' }, 'a trusted subdomain');
  for (const url of ['https://evil.example/token', 'https://my.acme.com.evil.example/token', 'http://test.acme.com.evil/token', 'https://acme.com/token']) {
    t.throws(() => resolveOAuthClient(spec, { oauth: { tokenUrl: url } }, {}, settings), { code: 'oauth_token_url_not_trusted' }, url);
  }
  t.match(resolveOAuthClient(spec, { oauth: { tokenUrl: 'https://proxy.internal/token' } }, {}, { acme: { ...settings.acme, tokenUrl: 'https://proxy.internal/token' } }), { clientSecret: 'global-secret' }, 'the instance-wide token URL is trusted');
});

t.test("a connection's own client goes with its own secret, to any endpoint", async (t) => {
  t.match(resolveOAuthClient(spec, { oauth: { clientId: 'own', tokenUrl: 'https://idp.example/token' } }, { clientSecret: 'own-secret' }, settings), { clientId: 'own', clientSecret: 'own-secret', tokenUrl: 'https://idp.example/token' });
  t.throws(() => resolveOAuthClient(spec, { oauth: { clientId: 'own' } }, {}, settings), { code: 'oauth_client_not_configured' }, "never Backhaul's secret with another client id");
  t.throws(() => resolveOAuthClient(spec, {}, { clientSecret: 'own-secret' }, {}), { code: 'oauth_client_not_configured' });
});

t.test('the authorization URL carries PKCE S256, state, scopes and the redirect', async (t) => {
  const u = new URL(authorizationUrl(resolveOAuthClient({ ...spec, optionalScopesParam: 'optional_scope', optionalScopes: ['x'] }, {}, {}, settings), { state: 's1', codeChallenge: 'c1', redirectUri: 'https://bh.example/v1/oauth/callback' }));
  t.same(Object.fromEntries(u.searchParams), { response_type: 'code', client_id: 'global-id', redirect_uri: 'https://bh.example/v1/oauth/callback', scope: 'api refresh_token', optional_scope: 'x', state: 's1', code_challenge: 'c1', code_challenge_method: 'S256' });
});

t.test('configuration: client and endpoints per provider from the environment', async (t) => {
  const c = loadConfig({ BACKHAUL_HUBSPOT_CLIENT_ID: 'id', BACKHAUL_HUBSPOT_CLIENT_SECRET: 's', BACKHAUL_HUBSPOT_TOKEN_URL: 'https://proxy/token', BACKHAUL_OAUTH_RETURN_ORIGINS: 'https://app.example.com/' });
  t.same(c.oauthClients, { hubspot: { clientId: 'id', clientSecret: 's', tokenUrl: 'https://proxy/token' } });
  t.same(c.oauthReturnOrigins, ['https://app.example.com']);
  t.throws(() => loadConfig({ BACKHAUL_HUBSPOT_TOKEN_URL: 'ftp://x' }), /BACKHAUL_HUBSPOT_TOKEN_URL/);
  t.throws(() => loadConfig({ BACKHAUL_OAUTH_RETURN_ORIGINS: 'https://app.example.com/path' }), /BACKHAUL_OAUTH_RETURN_ORIGINS/);
});

t.test("Salesforce: sandbox and My Domain token hosts are trusted; the org's refusals are told apart", async (t) => {
  const sfSpec = salesforceType.oauth!;
  const global = { salesforce: { clientId: 'g', clientSecret: 'gs' } };
  for (const host of ['test.salesforce.com', 'acme.my.salesforce.com', 'acme--uat.sandbox.my.salesforce.com']) {
    t.match(resolveOAuthClient(sfSpec, { oauth: { tokenUrl: `https://${host}/services/oauth2/token` } }, {}, global), { clientSecret: 'gs' }, host);
  }
  t.throws(() => resolveOAuthClient(sfSpec, { oauth: { tokenUrl: 'https://login.salesforce.com.evil.example/services/oauth2/token' } }, {}, global), { code: 'oauth_token_url_not_trusted' });

  const sf = await startFakeSalesforce();
  t.teardown(() => sf.close());
  const transport = { timeoutMs: 10_000, maxResponseBytes: 100_000, denyPrivateNetworks: false };
  const client = { ...resolveOAuthClient(sfSpec, {}, {}, { salesforce: { clientId: sf.clientId, clientSecret: sf.clientSecret, tokenUrl: `${sf.url}/services/oauth2/token` } }), tokenUrl: `${sf.url}/services/oauth2/token` };
  const got = await refreshAccessToken(client, sf.refreshToken, transport);
  t.match(got, { accessToken: /^00D/, extras: { instanceUrl: sf.url } }, 'instance_url kept as the instanceUrl secret');
  t.notOk(got.refreshToken, 'Salesforce does not rotate the refresh token');
  t.notOk(got.expiresAt, 'no expires_in: valid until Salesforce refuses it');
  t.match(await refreshAccessToken({ ...client, clientId: 'unknown' }, sf.refreshToken, transport).catch((e) => e), { code: 'oauth_client_invalid', message: /invalid_client_id/ }, 'an unknown consumer key is the client, not the grant');
  t.match(await refreshAccessToken(client, 'revoked', transport).catch((e) => e), { code: 'reauthorization_required', message: /expired access\/refresh token/ });
});
