// A Node backend that gets its tokens through a third-party OAuth 2.0 client library, with
// that library's defaults, from a real `authserver serve`; the sync server verifies them
// with this package. openid-client (discovery from the issuer's metadata;
// client_secret_basic, client_secret_post and private_key_jwt) and simple-oauth2 (the
// credentials in the Authorization header or in the body).

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { decodeProtectedHeader, exportJWK, generateKeyPair } from 'jose';
import * as oidc from 'openid-client';
import simpleOauth2 from 'simple-oauth2';

import { createVerifier } from '../src/index.js';
import { DEFAULT_AUDIENCE, sharedAuthserver } from './helpers/authserver.js';

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
