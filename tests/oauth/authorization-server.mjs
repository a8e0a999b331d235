// A real OAuth 2.1 / OpenID Connect authorization server (oidc-provider) for
// the end-to-end tests of bigid-auth-mcp's resource server, on loopback.
//
// It issues JWT access tokens (ES256) for any loopback `…/mcp` resource and
// for OTHER_RESOURCE, supports client credentials, authorization code + PKCE,
// dynamic client registration and devInteractions (headless login/consent).
//
// Under /test/ it also mints tokens the provider would never issue (expired,
// wrong issuer, unknown key, off-list algorithm, `none`, HS256 keyed with the
// public key), signed with the provider's own keys where that matters.
//
// Prints one JSON line on stdout once listening: {"issuer": "http://127.0.0.1:PORT"}.

import http from 'node:http';
import crypto from 'node:crypto';
import * as jose from 'jose';
import Provider from 'oidc-provider';

export const OTHER_RESOURCE = 'https://other.example/api';
const SCOPE = 'mcp:tools';

const ec = await jose.generateKeyPair('ES256', { extractable: true });
const rsa = await jose.generateKeyPair('RS256', { extractable: true, modulusLength: 2048 });
const foreign = await jose.generateKeyPair('ES256', { extractable: true });
const ecJwk = { ...(await jose.exportJWK(ec.privateKey)), kid: 'ec-1', use: 'sig', alg: 'ES256' };
// No `alg` on the RSA key: the server must refuse RS384 by its own allow-list.
const rsaJwk = { ...(await jose.exportJWK(rsa.privateKey)), kid: 'rsa-1', use: 'sig' };

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const isOurResource = (url) => {
  try {
    const u = new URL(url);
    return u.protocol === 'http:' && u.hostname === '127.0.0.1' && u.pathname.endsWith('/mcp');
  } catch {
    return false;
  }
};

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'cc-client',
      client_secret: 'cc-secret',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      scope: SCOPE,
    },
  ],
  jwks: { keys: [ecJwk, rsaJwk] },
  cookies: { keys: ['bigid-auth-mcp-test-cookie-key'] },
  // offline_access enables the refresh_token grant that SDK clients register for.
  scopes: ['openid', 'offline_access', SCOPE],
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    registration: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (_ctx, _client, oneOf) => oneOf ?? undefined,
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, resource) => {
        if (!isOurResource(resource) && resource !== OTHER_RESOURCE) {
          throw new Provider.errors.InvalidTarget();
        }
        return {
          scope: SCOPE,
          audience: resource,
          accessTokenFormat: 'jwt',
          accessTokenTTL: 300,
          jwt: { sign: { alg: 'ES256' } },
        };
      },
    },
  },
  // Any account id logs in; the subject is what the user typed.
  findAccount: (_ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
  pkce: { required: () => true },
});
provider.on('server_error', (_ctx, err) => console.error('oidc-provider error:', err));

const b64 = (data) => Buffer.from(data).toString('base64url');

// POST /test/mint {"claims": {...}, "kind": "provider|foreign|rs384|none|hs256-public"}
async function mint({ claims, kind }) {
  const now = Math.floor(Date.now() / 1000);
  const body = { iss: issuer, iat: now, exp: now + 300, scope: SCOPE, ...claims };
  switch (kind) {
    case 'provider':
      return new jose.SignJWT(body).setProtectedHeader({ alg: 'ES256', kid: 'ec-1', typ: 'at+jwt' }).sign(ec.privateKey);
    case 'foreign':
      return new jose.SignJWT(body).setProtectedHeader({ alg: 'ES256', kid: 'not-published', typ: 'at+jwt' }).sign(foreign.privateKey);
    case 'rs384':
      return new jose.SignJWT(body).setProtectedHeader({ alg: 'RS384', kid: 'rsa-1' }).sign(await jose.importJWK(rsaJwk, 'RS384'));
    case 'none':
      return `${b64(JSON.stringify({ alg: 'none', typ: 'JWT' }))}.${b64(JSON.stringify(body))}.`;
    case 'hs256-public': {
      // The classic confusion attack: HMAC keyed with the published public key.
      const pem = await jose.exportSPKI(rsa.publicKey);
      const input = `${b64(JSON.stringify({ alg: 'HS256', kid: 'rsa-1', typ: 'JWT' }))}.${b64(JSON.stringify(body))}`;
      const mac = crypto.createHmac('sha256', pem).update(input).digest('base64url');
      return `${input}.${mac}`;
    }
    default:
      throw new Error(`unknown kind ${kind}`);
  }
}

const callback = provider.callback();
server.on('request', async (req, res) => {
  if (req.method === 'POST' && req.url === '/test/mint') {
    let data = '';
    for await (const chunk of req) data += chunk;
    try {
      const token = await mint(JSON.parse(data));
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ token }));
    } catch (e) {
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end(String(e));
    }
    return;
  }
  callback(req, res);
});

process.stdout.write(`${JSON.stringify({ issuer })}\n`);
// The test ends this process by closing stdin (or killing it).
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
