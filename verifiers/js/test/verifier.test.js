// createVerifier against a real `authserver serve`: what it accepts and, for each way a
// token can be wrong, the reason it gives. Tokens come from POST /token; forged ones are
// built with jose.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createHmac } from 'node:crypto';
import { base64url, decodeJwt, decodeProtectedHeader, SignJWT } from 'jose';

import { createVerifier, InvalidTokenError, REASONS } from '../src/index.js';
import { freePort, sharedAuthserver } from './helpers/authserver.js';
import { newKey } from './helpers/issuer.js';

const AUDIENCE = 'https://sync.example.com';
let server;
let client;

before(async () => {
  server = await sharedAuthserver();
  client = server.client;
});

const issue = (params) => server.token(client, { audience: AUDIENCE, ...params });

async function rejects(promise, reason) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof InvalidTokenError, `not an InvalidTokenError: ${err?.stack ?? err}`);
    assert.equal(err.reason, reason, err.message);
    assert.ok(reason in REASONS);
    return true;
  });
}

function reSign(token, { header = {}, claims = {} }) {
  const [h, p] = token.split('.');
  const newHeader = { ...JSON.parse(new TextDecoder().decode(base64url.decode(h))), ...header };
  const newClaims = { ...JSON.parse(new TextDecoder().decode(base64url.decode(p))), ...claims };
  return { header: newHeader, claims: newClaims };
}

test('a token from POST /token verifies: claims as issued', async () => {
  const token = await issue({ sub: 'user-42', email: 'ada@example.com', claims: JSON.stringify({ libraryId: 'lib-7' }) });
  const verifier = createVerifier({ issuer: server.issuer, audience: AUDIENCE });
  const claims = await verifier.verify(token);
  assert.equal(claims.sub, 'user-42');
  assert.equal(claims.email, 'ada@example.com');
  assert.equal(claims.libraryId, 'lib-7');
  assert.equal(claims.iss, server.issuer);
  assert.equal(claims.client_id, client.client_id);
  assert.deepEqual(claims, decodeJwt(token));
  // An audience list: one entry matching is enough.
  const either = createVerifier({ issuer: server.issuer, audience: ['https://nope.example', AUDIENCE] });
  assert.equal((await either.verify(token)).sub, 'user-42');
});

test('wrong audience, wrong issuer', async () => {
  const token = await issue({ sub: 'u' });
  await rejects(createVerifier({ issuer: server.issuer, audience: 'https://other.example.com' }).verify(token), 'wrong_audience');
  // The other audience's token is not ours either.
  const other = await issue({ sub: 'u', audience: 'https://other.example.com' });
  await rejects(createVerifier({ issuer: server.issuer, audience: AUDIENCE }).verify(other), 'wrong_audience');
  // An issuer that differs is refused at discovery: the metadata's issuer must be exactly
  // the configured one (RFC 8414 §3.3). Here the metadata fetched for localhost names
  // 127.0.0.1.
  const elsewhere = createVerifier({ issuer: server.issuer.replace('127.0.0.1', 'localhost'), audience: AUDIENCE });
  await assert.rejects(elsewhere.verify(token), (err) => {
    assert.equal(err.reason, 'jwks_unavailable');
    assert.match(err.message, /metadata issuer does not match/);
    return true;
  });
  // With the keys named directly, the token's iss is checked against the configured issuer.
  const verifier = createVerifier({ issuer: 'https://auth.example.com', audience: AUDIENCE, jwksUri: `${server.issuer}/.well-known/jwks.json` });
  await assert.rejects(verifier.verify(token), (err) => err.reason === 'jwks_unavailable'); // https issuer, http keys: refused
  const plain = createVerifier({ issuer: 'http://auth.example.com', audience: AUDIENCE, jwksUri: `${server.issuer}/.well-known/jwks.json` });
  await rejects(plain.verify(token), 'wrong_issuer');
});

test('an issuer given with a trailing slash is discovered without it', async () => {
  // authserver drops a trailing slash from AUTHSERVER_ISSUER: its metadata and every iss
  // name the issuer without one, and so does a verifier given one.
  const token = await issue({ sub: 'u' });
  const verifier = createVerifier({ issuer: `${server.issuer}/`, audience: AUDIENCE });
  assert.equal(verifier.issuer, server.issuer);
  await verifier.ready();
  assert.equal((await verifier.verify(token)).iss, server.issuer);
});

test('expired and not yet valid, with the 30 s leeway', async () => {
  const token = await issue({ sub: 'u', expires_in: '60' });
  const { exp, nbf } = decodeJwt(token);
  const at = (seconds) => () => seconds * 1000;
  const verifier = (clockSeconds) => createVerifier({ issuer: server.issuer, audience: AUDIENCE, clock: at(clockSeconds) });
  await verifier(exp + 29).verify(token);
  await rejects(verifier(exp + 31).verify(token), 'expired');
  await verifier(nbf - 29).verify(token);
  await rejects(verifier(nbf - 31).verify(token), 'not_yet_valid');
  await rejects(createVerifier({ issuer: server.issuer, audience: AUDIENCE, clock: at(exp + 3), leeway: 0 }).verify(token), 'expired');
});

test('algorithm and type confusion are refused before any key is used', async () => {
  const token = await issue({ sub: 'u' });
  const verifier = createVerifier({ issuer: server.issuer, audience: AUDIENCE });
  const jwks = await (await fetch(`${server.issuer}/.well-known/jwks.json`)).json();
  const { header, claims } = reSign(token, {});

  // HS256 "signed" with the public key's JSON (the classic RS/HS confusion).
  const hsHeader = base64url.encode(JSON.stringify({ ...header, alg: 'HS256' }));
  const body = base64url.encode(JSON.stringify(claims));
  const mac = createHmac('sha256', JSON.stringify(jwks.keys[0])).update(`${hsHeader}.${body}`).digest();
  await rejects(verifier.verify(`${hsHeader}.${body}.${base64url.encode(mac)}`), 'unsupported_alg');
  // alg none.
  const none = base64url.encode(JSON.stringify({ ...header, alg: 'none' }));
  await rejects(verifier.verify(`${none}.${body}.`), 'unsupported_alg');
  // RS256 with a typ other than at+jwt (an ID token or any other JWT of the same keys).
  for (const typ of ['JWT', 'statuslist+jwt', undefined]) {
    const h = base64url.encode(JSON.stringify({ ...header, typ }));
    const [, , sig] = token.split('.');
    await rejects(verifier.verify(`${h}.${body}.${sig}`), 'wrong_typ');
  }
  // application/at+jwt is the same type (RFC 7515 §4.1.9): the changed header breaks the
  // signature, which is what says no here.
  const app = base64url.encode(JSON.stringify({ ...header, typ: 'application/at+jwt' }));
  await rejects(verifier.verify(`${app}.${body}.${token.split('.')[2]}`), 'bad_signature');
  // Header parameters that change processing are refused.
  for (const extra of [{ jku: 'https://evil.example/jwks' }, { crit: ['exp'] }, { b64: false }, { x5u: 'https://evil.example' }]) {
    const h = base64url.encode(JSON.stringify({ ...header, ...extra }));
    await rejects(verifier.verify(`${h}.${body}.${token.split('.')[2]}`), 'unsupported_header');
  }
  const noKid = base64url.encode(JSON.stringify({ alg: 'RS256', typ: 'at+jwt' }));
  await rejects(verifier.verify(`${noKid}.${body}.${token.split('.')[2]}`), 'missing_kid');
});

test('signatures: tampered claims, a stranger key under a published kid, an unknown kid', async () => {
  const token = await issue({ sub: 'u' });
  const verifier = createVerifier({ issuer: server.issuer, audience: AUDIENCE });
  const [h, , sig] = token.split('.');
  const forged = base64url.encode(JSON.stringify({ ...decodeJwt(token), sub: 'admin' }));
  await rejects(verifier.verify(`${h}.${forged}.${sig}`), 'bad_signature');

  const stranger = await newKey();
  const { header, claims } = reSign(token, {});
  const underRealKid = await new SignJWT(claims).setProtectedHeader(header).sign(stranger.privateKey);
  await rejects(verifier.verify(underRealKid), 'bad_signature');
  const unknownKid = await new SignJWT(claims).setProtectedHeader({ ...header, kid: stranger.kid }).sign(stranger.privateKey);
  await rejects(verifier.verify(unknownKid), 'unknown_kid');
});

test('required claims (RFC 9068 §2.2) cannot be missing', async () => {
  const stranger = await newKey();
  const token = await issue({ sub: 'u' });
  // Without its status claim: the issuer's status list is signed with the issuer's key,
  // which this test's own JWKS does not hold.
  const { claims: { status: _status, ...claims } } = reSign(token, {});
  // A token signed by a key of its own, served as the issuer's: a verifier pointed at a JWKS
  // that has it (this test's own), so only the claims are at stake.
  const jwksServer = await import('node:http').then(({ createServer }) =>
    createServer((req, res) => res.end(JSON.stringify({ keys: [stranger.jwk] }))),
  );
  const port = await freePort();
  await new Promise((r) => jwksServer.listen(port, '127.0.0.1', r));
  try {
    const verifier = createVerifier({ issuer: server.issuer, audience: AUDIENCE, jwksUri: `http://127.0.0.1:${port}/jwks` });
    const sign = (c) => new SignJWT(c).setProtectedHeader({ alg: 'RS256', typ: 'at+jwt', kid: stranger.kid }).sign(stranger.privateKey);
    assert.equal((await verifier.verify(await sign(claims))).sub, 'u');
    for (const name of ['iss', 'exp', 'aud', 'sub', 'client_id', 'iat', 'jti']) {
      const { [name]: _, ...rest } = claims;
      await rejects(verifier.verify(await sign(rest)), name === 'iss' || name === 'aud' ? 'missing_claim' : 'missing_claim');
    }
    await rejects(verifier.verify(await sign({ ...claims, iat: Math.floor(Date.now() / 1000) + 300 })), 'issued_in_future');
  } finally {
    jwksServer.close();
  }
});

test('garbage in: always InvalidTokenError, never another error', async () => {
  const verifier = createVerifier({ issuer: server.issuer, audience: AUDIENCE });
  await rejects(verifier.verify(''), 'missing_token');
  await rejects(verifier.verify(undefined), 'missing_token');
  await rejects(verifier.verify(null), 'missing_token');
  // Something that is not a token is malformed, as the Python verifier says too.
  await rejects(verifier.verify(42), 'malformed');
  await rejects(verifier.verify({}), 'malformed');
  await rejects(verifier.verify('x'.repeat(20000)), 'malformed');
  for (const junk of ['abc', 'a.b.c', '...', 'eyJhbGciOiJSUzI1NiJ9..', `${base64url.encode('[]')}.e30.x`, `${base64url.encode('{"alg":"RS256","typ":"at+jwt","kid":"k"}')}.bm90IGpzb24.x`, 42, {}, null]) {
    const err = await verifier.verify(junk).catch((e) => e);
    assert.ok(err instanceof InvalidTokenError, `${JSON.stringify(junk)}: ${err}`);
  }
});

test('issuer not reachable: jwks_unavailable (503), no unhandled error', async () => {
  const port = await freePort();
  const verifier = createVerifier({ issuer: `http://127.0.0.1:${port}`, audience: AUDIENCE, jwksCooldown: 0 });
  const token = await issue({ sub: 'u' });
  const err = await verifier.verify(token).catch((e) => e);
  assert.ok(err instanceof InvalidTokenError);
  assert.equal(err.reason, 'jwks_unavailable');
  assert.equal(err.status, 503);
  assert.match(err.message, /^jwks_unavailable: /);
});

test('a fetch failure whose cause has a numeric code names the cause, never a bare code', async () => {
  // undici rejects with "fetch failed" and the cause; a cause with code 0 (an errno-like
  // number, not a system error's name) was described as "0": "...: 0".
  const causes = [
    [Object.assign(new Error('the proxy closed the connection'), { code: 0 }), /: the proxy closed the connection \(code 0\)$/],
    [{ code: 0 }, /: fetch failed \(code 0\)$/],
    [{ code: '', message: 'socket hang up' }, /: socket hang up$/],
    [Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' }), /: ECONNREFUSED$/],
  ];
  const token = await issue({ sub: 'u' });
  for (const [cause, expected] of causes) {
    const failing = async () => {
      throw new TypeError('fetch failed', { cause });
    };
    for (const where of [{ issuer: server.issuer }, { issuer: server.issuer, jwksUri: `${server.issuer}/.well-known/jwks.json` }]) {
      const verifier = createVerifier({ ...where, audience: AUDIENCE, fetch: failing });
      const err = await verifier.verify(token).catch((e) => e);
      assert.ok(err instanceof InvalidTokenError, String(err));
      assert.equal(err.reason, 'jwks_unavailable');
      assert.match(err.message, expected);
      assert.doesNotMatch(err.message, /: \d*$/);
    }
  }
});

/** A key server of the test's own on a free loopback port; `handler` answers every request. */
async function keyServer(handler) {
  const { createServer } = await import('node:http');
  const listener = createServer(handler);
  const port = await freePort();
  await new Promise((r) => listener.listen(port, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${port}/`, close: () => listener.close() };
}

test('a JWKS the issuer stops serving: the last good set is used (stale-if-error), then not', async () => {
  const state = { up: true, jwks: await (await fetch(`${server.issuer}/.well-known/jwks.json`)).json() };
  const proxy = await keyServer((req, res) => (state.up ? res.end(JSON.stringify(state.jwks)) : res.writeHead(502).end()));
  try {
    const clock = () => Date.now() + clock.offset;
    clock.offset = 0;
    // jose's cache runs on the real clock; a 0 s cache makes every verification ask.
    const options = { issuer: server.issuer, audience: AUDIENCE, jwksUri: proxy.url, jwksCacheMaxAge: 0, clock };
    const verifier = createVerifier(options);
    const token = await issue({ sub: 'u' });
    await verifier.verify(token);
    state.up = false;
    await verifier.verify(token); // stale copy
    // A kid the stale copy lacks may be a key published since: not the token's fault.
    const [, payload, signature] = token.split('.');
    const header = base64url.encode(JSON.stringify({ alg: 'RS256', typ: 'at+jwt', kid: 'published-since' }));
    await rejects(verifier.verify(`${header}.${payload}.${signature}`), 'jwks_unavailable');
    clock.offset = 3601 * 1000; // the copy is now older than jwksStaleIfError
    await rejects(verifier.verify(token), 'jwks_unavailable');
    state.up = true;
    clock.offset = 0;
    await verifier.verify(token);
  } finally {
    proxy.close();
  }
});

test('a JWKS that stops answering holds back one verification, not one per retry', async () => {
  const state = { hang: 0, jwks: await (await fetch(`${server.issuer}/.well-known/jwks.json`)).json() };
  const proxy = await keyServer(async (req, res) => {
    if (state.hang) await new Promise((r) => setTimeout(r, state.hang));
    res.end(JSON.stringify(state.jwks));
  });
  try {
    const clock = () => Date.now() + clock.offset;
    clock.offset = 0;
    // jose's cache runs on the real clock; a 0 s cache makes every verification ask.
    const verifier = createVerifier({
      issuer: server.issuer, audience: AUDIENCE, jwksUri: proxy.url,
      jwksCacheMaxAge: 0, timeout: 0.5, status: 'off', clock,
    });
    const token = await issue({ sub: 'u' });
    await verifier.verify(token);
    state.hang = 1000;
    let started = Date.now();
    await verifier.verify(token); // finds out: the timeout, then the last good set
    assert.ok(Date.now() - started >= 450, `waited ${Date.now() - started} ms`);
    for (const seconds of [11, 22, 33]) {
      clock.offset = seconds * 1000; // past the cooldown each time: retried in the background
      started = Date.now();
      await verifier.verify(token);
      assert.ok(Date.now() - started < 300, `waited ${Date.now() - started} ms at ${seconds} s`);
    }
  } finally {
    state.hang = 0;
    await new Promise((r) => setTimeout(r, 1200)); // let the last retry end
    proxy.close();
  }
});

test('a cold start against a hung JWKS waits once per cooldown, not once per verification', async () => {
  const proxy = await keyServer(async (req, res) => {
    await new Promise((r) => setTimeout(r, 1000)); // accepts, answers too late
    res.end('{"keys": []}');
  });
  try {
    const clock = () => Date.now() + clock.offset;
    clock.offset = 0;
    const verifier = createVerifier({
      issuer: server.issuer, audience: AUDIENCE, jwksUri: proxy.url,
      timeout: 0.3, status: 'off', clock,
    });
    const token = await issue({ sub: 'u' });
    let started = Date.now();
    await rejects(verifier.verify(token), 'jwks_unavailable'); // waits out the timeout
    assert.ok(Date.now() - started >= 250, `waited ${Date.now() - started} ms`);
    for (let i = 0; i < 3; i += 1) {
      started = Date.now();
      await rejects(verifier.verify(token), 'jwks_unavailable');
      assert.ok(Date.now() - started < 150, `waited ${Date.now() - started} ms`);
    }
    clock.offset = 11 * 1000; // past the cooldown: asked again
    started = Date.now();
    await rejects(verifier.verify(token), 'jwks_unavailable');
    assert.ok(Date.now() - started >= 250, `waited ${Date.now() - started} ms`);
  } finally {
    await new Promise((r) => setTimeout(r, 1100));
    proxy.close();
  }
});

test('refresh() is not undone by a key fetch already under way', async () => {
  const state = { delay: 0, jwks: await (await fetch(`${server.issuer}/.well-known/jwks.json`)).json() };
  const proxy = await keyServer(async (req, res) => {
    const body = JSON.stringify(state.jwks); // the set as it is now, sent late
    if (state.delay) await new Promise((r) => setTimeout(r, state.delay));
    res.end(body);
  });
  try {
    const verifier = createVerifier({
      issuer: server.issuer, audience: AUDIENCE, jwksUri: proxy.url,
      jwksCacheMaxAge: 3600, jwksCooldown: 0, status: 'off',
    });
    const token = await issue({ sub: 'u' });
    await verifier.verify(token);
    state.delay = 300;
    const [, payload, signature] = token.split('.');
    const forged = `${base64url.encode(JSON.stringify({ alg: 'RS256', typ: 'at+jwt', kid: 'made-up' }))}.${payload}.${signature}`;
    const underWay = verifier.verify(forged).catch(() => {}); // an unknown kid: a fetch starts
    await new Promise((r) => setTimeout(r, 50));
    state.jwks = { keys: [] }; // the key is retired meanwhile
    state.delay = 0;
    await verifier.refresh();
    await rejects(verifier.verify(token), 'unknown_kid');
    await underWay;
  } finally {
    proxy.close();
  }
});

test('the header of a real token is what the verifier pins', async () => {
  const header = decodeProtectedHeader(await issue({ sub: 'u' }));
  assert.equal(header.alg, 'RS256');
  assert.equal(header.typ, 'at+jwt');
  assert.equal(typeof header.kid, 'string');
});

test('an issuer that is no http(s) URL is refused at construction, as the Python package refuses it', () => {
  // "https://[::1" passed the pattern and every verification was jwks_unavailable (Invalid URL).
  // The rest are what authserver never puts in iss (its AUTHSERVER_ISSUER rule), refused
  // by the Python package too: a port 0, a query, a fragment or a user name was accepted.
  for (const issuer of [
    'auth.example.com', 'ftp://auth.example.com', 'https://', 'http:///x', 'https://[::1',
    'HTTPS://auth.example.com', 'https://auth.example.com:99999', 'https://auth.example.com:0',
    'https://auth.example.com:', 'https://auth example.com', 'https://auth.example.com/a\tb',
    'https://auth.example.com?x=1', 'https://auth.example.com/#a', 'https://user@auth.example.com',
  ]) {
    assert.throws(() => createVerifier({ issuer, audience: AUDIENCE }), TypeError, issuer);
  }
});
