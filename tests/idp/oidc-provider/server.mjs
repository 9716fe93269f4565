// A certified OpenID Provider (panva/node-oidc-provider) for authgate's interop tests.
//
// Started by tests/e2e/test_oidc_provider_interop.py:
//   node server.mjs PORT            clients from the OP_CLIENTS environment variable (JSON array
//                                   of client metadata, as oidc-provider's `clients` option takes)
//   OP_AUTH_METHODS='["client_secret_post"]'  optional: the token endpoint's client
//                                   authentication methods (`clientAuthMethods`), which discovery
//                                   lists as token_endpoint_auth_methods_supported. oidc-provider
//                                   itself takes a client secret either way; like the providers
//                                   that hold to their list, this server then refuses HTTP Basic
//                                   at the token endpoint unless client_secret_basic is listed.
// Any login name with any password signs in; the account's email is `<login>@example.com`,
// verified, in the group "staff". Consent is granted automatically (loadExistingGrant), so a
// test completes the interaction with plain HTTP requests: the login form, nothing else.
import { generateKeyPair, exportJWK } from 'jose';
import Provider from 'oidc-provider';

const port = Number(process.argv[2] || process.env.PORT);
const clients = JSON.parse(process.env.OP_CLIENTS || '[]');
if (!port || clients.length === 0) {
  console.error('usage: OP_CLIENTS=\'[{...}]\' node server.mjs PORT');
  process.exit(2);
}

async function signingKey(alg, kid) {
  const { privateKey } = await generateKeyPair(alg, { extractable: true });
  return { ...(await exportJWK(privateKey)), alg, kid, use: 'sig' };
}

const SCOPES = 'openid email profile groups offline_access';

const configuration = {
  clients,
  ...(process.env.OP_AUTH_METHODS && { clientAuthMethods: JSON.parse(process.env.OP_AUTH_METHODS) }),
  jwks: { keys: [await signingKey('RS256', 'rs-1'), await signingKey('ES256', 'es-1')] },
  cookies: { keys: ['authgate-interop-test-only'] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    revocation: { enabled: true },
  },
  pkce: { required: () => true },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          email: `${id}@example.com`,
          email_verified: true,
          name: `Interop ${id}`,
          preferred_username: id,
          groups: ['staff'],
        };
      },
    };
  },
  async loadExistingGrant(ctx) {
    const { client, session } = ctx.oidc;
    const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
    if (grantId) {
      return ctx.oidc.provider.Grant.find(grantId);
    }
    const grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
    grant.addOIDCScope(SCOPES);
    await grant.save();
    return grant;
  },
  async issueRefreshToken(ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  rotateRefreshToken: true,
  ttl: { AccessToken: 300, IdToken: 300, RefreshToken: 3600 },
};

const provider = new Provider(`http://127.0.0.1:${port}`, configuration);
if (configuration.clientAuthMethods && !configuration.clientAuthMethods.includes('client_secret_basic')) {
  provider.use(async (ctx, next) => {
    if (ctx.path === '/token' && /^basic /i.test(ctx.get('authorization'))) {
      ctx.status = 401;
      ctx.body = { error: 'invalid_client', error_description: 'client_secret_basic is not supported' };
      return;
    }
    await next();
  });
}
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.listen(port, '127.0.0.1', () => console.log(`listening on ${port}`));
