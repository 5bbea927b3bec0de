// A Node backend that gets its tokens through a third-party OAuth 2.0 client library, with
// that library's defaults, from a real `authserver serve`; the sync server verifies them
// with this package. openid-client (discovery from the issuer's metadata;
// client_secret_basic, client_secret_post and private_key_jwt) and simple-oauth2 (the
// credentials in the Authorization header or in the body). And the sync server's side with
// other libraries than this package: oauth4webapi's validateJwtAccessToken and Auth0's
// express-oauth2-jwt-bearer, both strict RFC 9068 resource-server checks.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import express from 'express';
import { auth as requireBearer } from 'express-oauth2-jwt-bearer';
import { decodeProtectedHeader, exportJWK, generateKeyPair } from 'jose';
import * as oauth from 'oauth4webapi';
import * as oidc from 'openid-client';
import simpleOauth2 from 'simple-oauth2';

import { createVerifier } from '../src/index.js';
import { DEFAULT_AUDIENCE, freePort, sharedAuthserver } from './helpers/authserver.js';

let server;
let client;
let verifier;
let dir;

before(async () => {
  server = await sharedAuthserver();
  client = server.client;
  verifier = createVerifier({ issuer: server.issuer, audience: DEFAULT_AUDIENCE });
  dir = mkdtempSync(path.join(tmpdir(), 'clients-'));
});

after(() => rmSync(dir, { recursive: true, force: true }));

/** The token verified by this package, with the user and client it names. */
async function verified(accessToken, sub, clientId) {
  assert.equal(decodeProtectedHeader(accessToken).typ, 'at+jwt');
  const claims = await verifier.verify(accessToken);
  assert.equal(claims.sub, sub);
  assert.equal(claims.client_id, clientId);
  return claims;
}

/** openid-client's configuration from the issuer's metadata; the test server is plain http. */
const discover = (clientId, auth) =>
  oidc.discovery(new URL(server.issuer), clientId, undefined, auth, {
    execute: [oidc.allowInsecureRequests],
  });

for (const [name, auth] of [
  ['client_secret_basic', () => oidc.ClientSecretBasic(client.client_secret)],
  ['client_secret_post', () => oidc.ClientSecretPost(client.client_secret)],
]) {
  test(`openid-client, ${name}`, async () => {
    const config = await discover(client.client_id, auth());
    const sub = `oidc-${name}`;
    const tokens = await oidc.clientCredentialsGrant(config, {
      sub,
      email: `${sub}@example.com`,
      name: 'Ada Lovelace',
      audience: DEFAULT_AUDIENCE,
    });
    assert.equal(tokens.token_type, 'bearer'); // openid-client lower-cases it
    const claims = await verified(tokens.access_token, sub, client.client_id);
    assert.equal(claims.email, `${sub}@example.com`);
    assert.equal(claims.name, 'Ada Lovelace');
    assert.ok(tokens.expiresIn() > 0);
  });
}

test('openid-client, private_key_jwt with its own assertions', async () => {
  const { privateKey, publicKey } = await generateKeyPair('RS256');
  const jwk = { ...(await exportJWK(publicKey)), kid: 'backend-1', alg: 'RS256', use: 'sig' };
  const jwksFile = path.join(dir, 'backend-jwks.json');
  writeFileSync(jwksFile, JSON.stringify({ keys: [jwk] }));
  const jwtClient = server.createClient('--name', 'jwt backend', '--audience', DEFAULT_AUDIENCE, '--jwks-file', jwksFile);
  const config = await discover(jwtClient.client_id, oidc.PrivateKeyJwt({ key: privateKey, kid: 'backend-1' }));
  for (const sub of ['oidc-jwt-1', 'oidc-jwt-2']) {
    const tokens = await oidc.clientCredentialsGrant(config, { sub, audience: DEFAULT_AUDIENCE });
    await verified(tokens.access_token, sub, jwtClient.client_id);
  }
});

test('openid-client reads the server\'s errors', async () => {
  // A 401 carries a Basic challenge (RFC 6749 §5.2, RFC 9110 §15.5.2): openid-client
  // reports the challenge, naming the error.
  const wrong = await discover(client.client_id, oidc.ClientSecretBasic('not-the-secret'));
  let err = await oidc.clientCredentialsGrant(wrong, { sub: 'nobody' }).catch((e) => e);
  assert.ok(err instanceof oidc.WWWAuthenticateChallengeError, String(err));
  assert.equal(err.status, 401);
  assert.deepEqual(
    err.cause.map((c) => [c.scheme, c.parameters.error]),
    [['basic', 'invalid_client']],
  );
  // Other errors come in the JSON body.
  const right = await discover(client.client_id, oidc.ClientSecretBasic(client.client_secret));
  err = await oidc
    .clientCredentialsGrant(right, { sub: 'nobody', audience: 'https://not-registered.example.com' })
    .catch((e) => e);
  assert.ok(err instanceof oidc.ResponseBodyError, String(err));
  assert.equal(err.status, 400);
  assert.equal(err.error, 'invalid_target');
});

for (const authorizationMethod of ['header', 'body']) {
  test(`simple-oauth2, credentials in the ${authorizationMethod}`, async () => {
    const credentials = new simpleOauth2.ClientCredentials({
      client: { id: client.client_id, secret: client.client_secret },
      auth: { tokenHost: server.issuer, tokenPath: '/token' },
      options: { authorizationMethod },
    });
    const sub = `simple-${authorizationMethod}`;
    const token = await credentials.getToken({ sub, audience: DEFAULT_AUDIENCE });
    assert.equal(token.expired(), false);
    await verified(token.token.access_token, sub, client.client_id);

    const wrong = new simpleOauth2.ClientCredentials({
      client: { id: client.client_id, secret: 'not-the-secret' },
      auth: { tokenHost: server.issuer, tokenPath: '/token' },
      options: { authorizationMethod },
    });
    const err = await wrong.getToken({ sub }).catch((e) => e);
    assert.equal(err.output?.statusCode, 401, String(err));
    assert.equal(err.data.payload.error, 'invalid_client');
  });
}

test('oauth4webapi validateJwtAccessToken (RFC 9068) accepts the tokens, for their audience only', async () => {
  const insecure = { [oauth.allowInsecureRequests]: true };
  const issuer = new URL(server.issuer);
  const as = await oauth.processDiscoveryResponse(
    issuer,
    await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure }),
  );
  const token = await server.token(client, { sub: 'rs-user', audience: DEFAULT_AUDIENCE });
  const request = new Request('https://sync.example.com/api', { headers: { authorization: `Bearer ${token}` } });
  const claims = await oauth.validateJwtAccessToken(as, request, DEFAULT_AUDIENCE, insecure);
  assert.equal(claims.sub, 'rs-user');
  assert.equal(claims.client_id, client.client_id);
  const err = await oauth
    .validateJwtAccessToken(as, request, 'https://other.example.com', insecure)
    .catch((e) => e);
  assert.equal(err.code, oauth.JWT_CLAIM_COMPARISON, String(err));
});

test('express-oauth2-jwt-bearer (strict RFC 9068) accepts the tokens, for their audience only', async () => {
  const app = express();
  for (const [path, audience] of [['/ours', DEFAULT_AUDIENCE], ['/theirs', 'https://elsewhere.example.com']]) {
    app.get(path, requireBearer({ issuerBaseURL: server.issuer, audience, strict: true, tokenSigningAlg: 'RS256' }), (req, res) =>
      res.json({ sub: req.auth.payload.sub }),
    );
  }
  app.use((err, req, res, next) => res.status(err.status ?? 500).json({ error: err.code ?? err.name }));
  const port = await freePort();
  const listening = app.listen(port, '127.0.0.1');
  await new Promise((resolve) => listening.once('listening', resolve));
  try {
    const token = await server.token(client, { sub: 'express-user', audience: DEFAULT_AUDIENCE });
    const call = (path) => fetch(`http://127.0.0.1:${port}${path}`, { headers: { authorization: `Bearer ${token}` } });
    let response = await call('/ours');
    assert.equal(response.status, 200, await response.clone().text());
    assert.deepEqual(await response.json(), { sub: 'express-user' });
    response = await call('/theirs');
    assert.equal(response.status, 401);
    assert.equal((await response.json()).error, 'invalid_token');
  } finally {
    await new Promise((resolve) => listening.close(resolve));
  }
});
