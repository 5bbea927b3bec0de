// Third-party OAuth 2.0 libraries for Node, each running its own code against a real
// `authserver serve`: openid-client (discovery, the client_credentials grant with each
// authentication method, introspection, revocation, the errors it surfaces),
// oauth4webapi's RFC 9068 `validateJwtAccessToken`, and what a sync server puts in front
// of its API: Auth0's express-oauth2-jwt-bearer, and jsonwebtoken with jwks-rsa.
//
// tests/e2e/test_third_party_clients_node.py starts the server, registers the clients and
// runs this file with AUTHSERVER_URL, AUDIENCE, SCOPES (the two scopes both clients are
// registered with) and OAUTH_CLIENTS (JSON: `secret` {client_id, client_secret}, `jwt`
// {client_id, kid, private_key: a PKCS#8 PEM whose public key was registered with
// --jwks-file}).
//
// Every resource-server library accepts a valid token and refuses one for another
// audience and one that has expired, each the way it documents. The expired token is
// asked for first (expires_in=1) and checked last, so its wait overlaps the other tests.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { before, test } from 'node:test';

import express from 'express';
import { auth, requiredScopes } from 'express-oauth2-jwt-bearer';
import { calculateJwkThumbprint, decodeJwt, decodeProtectedHeader, importPKCS8 } from 'jose';
import jwt from 'jsonwebtoken';
import jwksRsa from 'jwks-rsa';
import * as oauth from 'oauth4webapi';
import * as client from 'openid-client';

const ISSUER = process.env.AUTHSERVER_URL;
const AUDIENCE = process.env.AUDIENCE;
const [READ, WRITE] = (process.env.SCOPES ?? '').split(' ');
const CLIENTS = JSON.parse(process.env.OAUTH_CLIENTS ?? '{}');
const ELSEWHERE = 'https://elsewhere.example.com';

// The server is plain http on loopback: openid-client and oauth4webapi refuse that unless told.
const INSECURE = { execute: [client.allowInsecureRequests] };
const INSECURE_4WA = { [oauth.allowInsecureRequests]: true };

/** openid-client's configuration, discovered from the issuer (RFC 8414 with `oauth2`, else
 * OpenID Connect Discovery, openid-client's default). */
function discover(clientId, clientAuth, algorithm) {
  return client.discovery(new URL(ISSUER), clientId, undefined, clientAuth, { ...INSECURE, algorithm });
}

let secretConfig;
let expiring; // a token that lives one second, checked by the last tests
let jwtKey;

before(async () => {
  secretConfig = await discover(CLIENTS.secret.client_id, client.ClientSecretBasic(CLIENTS.secret.client_secret));
  const tokens = await client.clientCredentialsGrant(secretConfig, { sub: 'user-expiring', audience: AUDIENCE, expires_in: '1' });
  assert.equal(tokens.expires_in, 1);
  expiring = tokens.access_token;
  jwtKey = await importPKCS8(CLIENTS.jwt.private_key, 'RS256');
});

/** A fresh token for `sub` through openid-client with the shared secret client. */
async function freshToken(sub, parameters = {}) {
  const tokens = await client.clientCredentialsGrant(secretConfig, { sub, audience: AUDIENCE, ...parameters });
  return tokens.access_token;
}

/** Resolves once the expiring token's `exp` has come: every library here, without a
 * tolerance, takes a token for expired from that second on (`exp <= now`). */
async function expired() {
  const { exp } = decodeJwt(expiring);
  const wait = exp * 1000 + 20 - Date.now();
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  return expiring;
}

// -- openid-client -----------------------------------------------------------------------

test('openid-client: both discovery documents name this issuer and its endpoints', async () => {
  for (const algorithm of ['oidc', 'oauth2']) {
    const config = await discover(CLIENTS.secret.client_id, client.ClientSecretBasic(CLIENTS.secret.client_secret), algorithm);
    const metadata = config.serverMetadata();
    assert.equal(metadata.issuer, ISSUER);
    assert.equal(metadata.token_endpoint, `${ISSUER}/token`);
    assert.equal(metadata.introspection_endpoint, `${ISSUER}/introspect`);
    assert.equal(metadata.revocation_endpoint, `${ISSUER}/revoke`);
    assert.equal(metadata.jwks_uri, `${ISSUER}/.well-known/jwks.json`);
  }
});

for (const [method, clientAuth] of [
  ['client_secret_basic', () => client.ClientSecretBasic(CLIENTS.secret.client_secret)],
  ['client_secret_post', () => client.ClientSecretPost(CLIENTS.secret.client_secret)],
  // A bare key: the assertion carries no kid (the server tries each key the client registered).
  ['private_key_jwt', () => client.PrivateKeyJwt(jwtKey)],
]) {
  test(`openid-client: ${method} gets a token, introspects it, revokes it`, async () => {
    const clientId = method === 'private_key_jwt' ? CLIENTS.jwt.client_id : CLIENTS.secret.client_id;
    const config = await discover(clientId, clientAuth());
    const sub = `user-${method}`;
    const tokens = await client.clientCredentialsGrant(config, { sub, audience: AUDIENCE, scope: WRITE });
    assert.equal(tokens.token_type, 'bearer'); // openid-client lower-cases it
    assert.equal(tokens.scope, WRITE);
    assert.ok(tokens.expiresIn() > 0);
    const claims = decodeJwt(tokens.access_token);

    const introspected = await client.tokenIntrospection(config, tokens.access_token);
    assert.equal(introspected.active, true);
    assert.equal(introspected.sub, sub);
    assert.equal(introspected.client_id, clientId);
    assert.equal(introspected.aud, AUDIENCE);
    assert.equal(introspected.iss, ISSUER);
    assert.equal(introspected.scope, WRITE);
    assert.equal(introspected.exp, claims.exp);
    assert.equal(introspected.jti, claims.jti);

    assert.equal(await client.tokenRevocation(config, tokens.access_token), undefined);
    assert.deepEqual(await client.tokenIntrospection(config, tokens.access_token), { active: false });
    // RFC 7009 §2.2: revoking it again (an invalid token now) is still a success.
    assert.equal(await client.tokenRevocation(config, tokens.access_token), undefined);
  });
}

test('openid-client: private_key_jwt with a kid; another client\'s token is not its to revoke', async () => {
  const config = await discover(CLIENTS.jwt.client_id, client.PrivateKeyJwt({ key: jwtKey, kid: CLIENTS.jwt.kid }));
  const tokens = await client.clientCredentialsGrant(config, { audience: AUDIENCE });
  const introspected = await client.tokenIntrospection(config, tokens.access_token);
  assert.equal(introspected.active, true);
  // Without a sub the token is the client's own.
  assert.equal(introspected.sub, CLIENTS.jwt.client_id);

  // The secret client's token, for the audience both share: visible to introspection, but
  // revoking it is refused (RFC 7009 §2.1) with a §5.2 body, and it stays active.
  const theirs = await freshToken('user-of-the-other-client');
  assert.equal((await client.tokenIntrospection(config, theirs)).active, true);
  const err = await client.tokenRevocation(config, theirs).catch((e) => e);
  assert.ok(err instanceof client.ResponseBodyError, String(err));
  assert.equal(err.status, 400);
  assert.equal(err.error, 'invalid_grant');
  assert.equal((await client.tokenIntrospection(secretConfig, theirs)).active, true);
});

for (const [method, clientAuth] of [
  ['client_secret_basic', client.ClientSecretBasic],
  ['client_secret_post', client.ClientSecretPost],
]) {
  test(`openid-client: a wrong secret (${method}) surfaces the RFC 6749 §5.2 error`, async () => {
    const config = await discover(CLIENTS.secret.client_id, clientAuth('not-the-secret'));
    for (const call of [
      () => client.clientCredentialsGrant(config, { audience: AUDIENCE }),
      () => client.tokenIntrospection(config, expiring),
      () => client.tokenRevocation(config, expiring),
    ]) {
      const err = await call().catch((e) => e);
      // 401 with a Basic challenge (RFC 6749 §5.2): openid-client reports the challenge, and
      // hands over the response, whose body is the §5.2 error.
      assert.ok(err instanceof client.WWWAuthenticateChallengeError, String(err));
      assert.equal(err.status, 401);
      assert.deepEqual(
        err.cause.map((challenge) => [challenge.scheme, challenge.parameters.error]),
        [['basic', 'invalid_client']],
      );
      const body = await err.response.json();
      assert.equal(body.error, 'invalid_client');
      assert.equal(typeof body.error_description, 'string');
      assert.ok(!JSON.stringify(body).includes('not-the-secret'));
    }
  });
}

test('openid-client: a request error reaches it as error and error_description', async () => {
  const err = await client.clientCredentialsGrant(secretConfig, { audience: ELSEWHERE }).catch((e) => e);
  assert.ok(err instanceof client.ResponseBodyError, String(err));
  assert.equal(err.status, 400);
  assert.equal(err.error, 'invalid_target');
  assert.ok(err.error_description.length > 0);
});

// -- the tokens themselves (RFC 9068), as resource-server libraries read them --------------

test('jose: the tokens are RS256 at+jwt, signed with a JWKS key named by its RFC 7638 thumbprint', async () => {
  const token = await freshToken('user-header');
  const header = decodeProtectedHeader(token);
  assert.equal(header.alg, 'RS256');
  assert.equal(header.typ, 'at+jwt');
  const jwks = await (await fetch(`${ISSUER}/.well-known/jwks.json`)).json();
  const key = jwks.keys.find((k) => k.kid === header.kid);
  assert.ok(key, `no key ${header.kid} in the JWKS`);
  assert.equal(await calculateJwkThumbprint(key, 'sha256'), header.kid);
});

test('oauth4webapi: validateJwtAccessToken (RFC 9068) accepts a token for its audience only', async () => {
  const issuer = new URL(ISSUER);
  const as = await oauth.processDiscoveryResponse(
    issuer,
    await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...INSECURE_4WA }),
  );
  const bearer = (token) => new Request('https://sync.example.com/api', { headers: { authorization: `Bearer ${token}` } });
  const options = { ...INSECURE_4WA, [oauth.clockTolerance]: 0 };

  const claims = await oauth.validateJwtAccessToken(as, bearer(await freshToken('user-4wa')), AUDIENCE, options);
  assert.equal(claims.sub, 'user-4wa');
  assert.equal(claims.client_id, CLIENTS.secret.client_id);
  assert.equal(claims.iss, ISSUER);

  let err = await oauth.validateJwtAccessToken(as, bearer(await freshToken('user-4wa')), ELSEWHERE, options).catch((e) => e);
  assert.equal(err.code, oauth.JWT_CLAIM_COMPARISON, String(err));
  assert.equal(err.cause?.claim, 'aud');

  err = await oauth.validateJwtAccessToken(as, bearer(await expired()), AUDIENCE, options).catch((e) => e);
  assert.equal(err.code, oauth.JWT_TIMESTAMP_CHECK, String(err));
  assert.equal(err.cause?.claim, 'exp');
});

/** An express app guarded by express-oauth2-jwt-bearer as docs/sync-servers.md shows it
 * (discovery from the issuer, strict RFC 9068, a 30 s leeway; /no-leeway without one); its
 * errors answered with their status and headers, as the library's README shows. */
async function expressApp() {
  const app = express();
  const guard = (audience, clockTolerance = 30) =>
    auth({ issuerBaseURL: ISSUER, audience, tokenSigningAlg: 'RS256', strict: true, clockTolerance });
  app.get('/ours', guard(AUDIENCE), (req, res) => res.json(req.auth.payload));
  app.get('/scoped', guard(AUDIENCE), requiredScopes(WRITE), (req, res) => res.json({ ok: true }));
  app.get('/theirs', guard(ELSEWHERE), (req, res) => res.json(req.auth.payload));
  app.get('/no-leeway', guard(AUDIENCE, 0), (req, res) => res.json(req.auth.payload));
  app.use((err, req, res, next) => res.status(err.status ?? 500).set(err.headers ?? {}).json({ error: err.code ?? err.name }));
  const listening = app.listen(0, '127.0.0.1');
  await once(listening, 'listening');
  const base = `http://127.0.0.1:${listening.address().port}`;
  return {
    call: (path, token) => fetch(base + path, { headers: { authorization: `Bearer ${token}` } }),
    close: () => new Promise((resolve) => listening.close(resolve)),
  };
}

test('express-oauth2-jwt-bearer: accepts a token for its audience; 401 invalid_token otherwise', async () => {
  const app = await expressApp();
  try {
    const token = await freshToken('user-express'); // every registered scope
    let response = await app.call('/ours', token);
    assert.equal(response.status, 200, await response.clone().text());
    const payload = await response.json();
    assert.equal(payload.sub, 'user-express');
    assert.equal(payload.client_id, CLIENTS.secret.client_id);
    response = await app.call('/scoped', token);
    assert.equal(response.status, 200, await response.clone().text());
    // A token without the scope is refused by requiredScopes (403 insufficient_scope).
    response = await app.call('/scoped', await freshToken('user-express', { scope: READ }));
    assert.equal(response.status, 403);
    assert.match(response.headers.get('www-authenticate'), /error="insufficient_scope"/);

    response = await app.call('/theirs', token);
    assert.equal(response.status, 401);
    assert.match(response.headers.get('www-authenticate'), /error="invalid_token"/);
    assert.match(response.headers.get('www-authenticate'), /'aud'/);

    response = await app.call('/no-leeway', await expired());
    assert.equal(response.status, 401);
    assert.match(response.headers.get('www-authenticate'), /error="invalid_token"/);
    assert.match(response.headers.get('www-authenticate'), /'exp' claim timestamp check failed/);
  } finally {
    await app.close();
  }
});

test('jsonwebtoken with jwks-rsa: verifies a token; refuses another audience and an expired one', async () => {
  // What docs/sync-servers.md ("Node: jsonwebtoken with jwks-rsa") shows, with the
  // audience and the leeway as arguments.
  const keys = jwksRsa({
    jwksUri: `${ISSUER}/.well-known/jwks.json`,
    cacheMaxAge: 5 * 60 * 1000,
    rateLimit: true,
    jwksRequestsPerMinute: 6,
  });
  const getKey = (header, callback) =>
    keys.getSigningKey(header.kid, (err, key) => callback(err, key?.getPublicKey()));
  const verify = (token, { audience = AUDIENCE, clockTolerance = 30 } = {}) =>
    new Promise((resolve, reject) =>
      jwt.verify(
        token,
        getKey,
        { issuer: ISSUER, audience, algorithms: ['RS256'], clockTolerance, complete: true },
        (err, decoded) => {
          if (err) return reject(err);
          const typ = String(decoded.header.typ).toLowerCase().replace(/^application\//, '');
          const missing = ['sub', 'client_id', 'iat', 'jti'].filter((claim) => decoded.payload[claim] === undefined);
          if (typ !== 'at+jwt' || missing.length) return reject(new jwt.JsonWebTokenError('not an RFC 9068 access token'));
          return resolve(decoded.payload);
        },
      ),
    );

  const payload = await verify(await freshToken('user-jsonwebtoken'));
  assert.equal(payload.sub, 'user-jsonwebtoken');
  assert.equal(payload.client_id, CLIENTS.secret.client_id);

  await assert.rejects(verify(await freshToken('user-jsonwebtoken'), { audience: ELSEWHERE }), (err) => {
    assert.ok(err instanceof jwt.JsonWebTokenError, String(err));
    assert.match(err.message, /jwt audience invalid/);
    return true;
  });
  // Without the leeway: with it, the token is accepted for 30 s more.
  await assert.rejects(verify(await expired(), { clockTolerance: 0 }), (err) => {
    assert.ok(err instanceof jwt.TokenExpiredError, String(err));
    assert.equal(err.expiredAt.getTime(), decodeJwt(expiring).exp * 1000);
    return true;
  });
});

test('openid-client: an expired token introspects as inactive (RFC 7662 §2.2)', async () => {
  assert.deepEqual(await client.tokenIntrospection(secretConfig, await expired()), { active: false });
});

test('openid-client: once a client_id\'s failures are throttled, 429 slow_down reaches it; the right secret still works', async () => {
  // 20 failed authentications per client_id a minute (the default, which the server of
  // test_third_party_clients_node.py sets); the wrong-secret tests above spent 6 of them.
  const wrong = await discover(CLIENTS.secret.client_id, client.ClientSecretPost('not-the-secret'));
  let err;
  for (let attempt = 0; attempt < 20 && err?.status !== 429; attempt += 1) {
    err = await client.clientCredentialsGrant(wrong, { audience: AUDIENCE }).catch((e) => e);
  }
  assert.ok(err instanceof client.ResponseBodyError, String(err));
  assert.equal(err.status, 429);
  assert.equal(err.error, 'slow_down');
  assert.ok(Number(err.response.headers.get('retry-after')) > 0);
  const tokens = await client.clientCredentialsGrant(secretConfig, { audience: AUDIENCE });
  assert.equal(tokens.token_type, 'bearer');
});
