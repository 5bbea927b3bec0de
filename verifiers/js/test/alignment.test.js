// What the JS verifier must answer exactly as the Python verifier (authserver_verifier)
// does: every case of verifiers/alignment/cases.json (the reason for each kind of bad
// header or claim, a status claim without status_list, an issuer with a trailing slash),
// which verifiers/python/tests/test_verifier.py runs too; and, written on each side, the
// default bounded staleness and conditional GETs (If-None-Match, 304 = still fresh) for
// status lists and the JWKS.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';

import { base64url } from 'jose';

import { createVerifier, DEFAULTS, InvalidTokenError, REASONS } from '../src/index.js';
import { startIssuer } from './helpers/issuer.js';

const AUDIENCE = 'https://sync.example.com';
let issuer;

before(async () => {
  issuer = await startIssuer();
});
after(() => issuer.close());

function steppedClock() {
  const clock = () => Date.now() + clock.offset * 1000;
  clock.offset = 0;
  return clock;
}

async function reasonOf(verifier, token) {
  try {
    await verifier.verify(token);
    return null;
  } catch (err) {
    assert.ok(err instanceof InvalidTokenError, `not an InvalidTokenError: ${err?.stack ?? err}`);
    return err.reason;
  }
}

// One test per case of the shared file; its "about" says what each field means.
const { cases } = JSON.parse(readFileSync(new URL('../../alignment/cases.json', import.meta.url), 'utf8'));
const TOKEN_FIELDS = new Set(['header', 'drop_header', 'claims', 'drop_claims', 'claims_from_now', 'iss_suffix']);
const OPTION_FIELDS = new Set(['status', 'issuer_suffix']);

/** The case's token: signed by hand, so headers jose would refuse to sign (crit) can be made. */
async function caseToken(spec) {
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    iss: issuer.issuer + (spec.iss_suffix ?? ''),
    sub: 'user-1',
    aud: AUDIENCE,
    client_id: 'backend',
    jti: `jti-${Math.random()}`,
    iat: now,
    nbf: now,
    exp: now + 300,
    ...spec.claims,
  };
  for (const [name, offset] of Object.entries(spec.claims_from_now ?? {})) claims[name] = now + offset;
  const header = { alg: 'RS256', typ: 'at+jwt', kid: issuer.key.kid, ...spec.header };
  for (const name of spec.drop_claims ?? []) delete claims[name];
  for (const name of spec.drop_header ?? []) delete header[name];
  const encode = (value) => base64url.encode(JSON.stringify(value));
  const input = `${encode(header)}.${encode(claims)}`;
  const signature = await crypto.subtle.sign('RSASSA-PKCS1-v1_5', issuer.key.privateKey, new TextEncoder().encode(input));
  return `${input}.${base64url.encode(new Uint8Array(signature))}`;
}

for (const c of cases) {
  test(`alike with the Python verifier: ${c.name}`, async () => {
    const spec = c.token;
    const options = c.options ?? {};
    // A field this runner does not know would be ignored here and honoured in Python.
    assert.ok(Object.keys(spec).every((k) => TOKEN_FIELDS.has(k)), JSON.stringify(c));
    assert.ok(Object.keys(options).every((k) => OPTION_FIELDS.has(k)), JSON.stringify(c));
    const verifier = createVerifier({
      issuer: issuer.issuer + (options.issuer_suffix ?? ''),
      audience: AUDIENCE,
      status: options.status ?? 'if-present',
    });
    const requests = issuer.state.listRequests;
    const expected = c.expect === 'ok' ? null : c.expect;
    assert.ok(expected === null || expected in REASONS, JSON.stringify(c));
    assert.equal(await reasonOf(verifier, await caseToken(spec)), expected);
    // No case names a status list: a status this verifier cannot check fetches nothing.
    assert.equal(issuer.state.listRequests, requests);
  });
}

test('a time claim beyond any time (1e400: Infinity in JavaScript) is invalid_claim, as in Python', async () => {
  // Signed by hand: JSON.stringify cannot write such a number. nbf 1e400 was not_yet_valid
  // (jose compared Infinity before the finiteness check), the Python verifier's is
  // invalid_claim for all of them.
  const now = Math.floor(Date.now() / 1000);
  const header = base64url.encode(JSON.stringify({ alg: 'RS256', typ: 'at+jwt', kid: issuer.key.kid }));
  const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE, status: 'off' });
  for (const claim of ['exp', 'nbf', 'iat']) {
    for (const written of ['1e400', '-1e400']) {
      const times = { iat: now, exp: now + 300, [claim]: written };
      const payload = base64url.encode(
        `{"iss":${JSON.stringify(issuer.issuer)},"sub":"u","aud":"${AUDIENCE}","client_id":"c","jti":"j",` +
          `"iat":${times.iat},"exp":${times.exp}${claim === 'nbf' ? `,"nbf":${written}` : ''}}`,
      );
      const input = `${header}.${payload}`;
      const signature = await crypto.subtle.sign('RSASSA-PKCS1-v1_5', issuer.key.privateKey, new TextEncoder().encode(input));
      const token = `${input}.${base64url.encode(new Uint8Array(signature))}`;
      assert.equal(await reasonOf(verifier, token), 'invalid_claim', `${claim} ${written}`);
    }
  }
});

test('one token, one spelling: padding, whitespace or other unused bits are malformed', async () => {
  const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE, status: 'off' });
  const token = await issuer.token({ status: null });
  assert.equal(await reasonOf(verifier, token), null);
  const [h, p, sig] = token.split('.');
  // The last character of a 256-byte signature carries 4 unused low bits.
  const last = sig.at(-1);
  const sibling = 'AQgw'.includes(last) ? String.fromCharCode(last.charCodeAt(0) + 1) : String.fromCharCode(last.charCodeAt(0) - 1);
  for (const variant of [`${token}==`, `${token}\t`, `${token} `, `${token}\r\n`, `${h}.${p}.${sig.slice(0, 10)} ${sig.slice(10)}`, `${h}.${p}.${sig.slice(0, -1)}${sibling}`]) {
    assert.equal(await reasonOf(verifier, variant), 'malformed', JSON.stringify(variant.slice(-12)));
  }
});

test('a status list served as another media type is not used, as in Python', async () => {
  issuer.state.lists.set('json-typed', { statuses: [0], contentType: 'application/json' });
  const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE });
  const token = await issuer.token({ list: 'json-typed', idx: 0 });
  assert.equal(await reasonOf(verifier, token), 'status_unavailable');
});

test('an issuer with a trailing slash is discovered without it', async () => {
  // authserver's issuer never ends in / (it drops one from AUTHSERVER_ISSUER).
  const verifier = createVerifier({ issuer: `${issuer.issuer}/`, audience: AUDIENCE, status: 'off' });
  assert.equal(verifier.issuer, issuer.issuer);
  const fetches = issuer.state.jwksFetches;
  await verifier.ready();
  assert.equal(issuer.state.jwksFetches - fetches, 1);
  assert.equal((await verifier.verify(await issuer.token({ status: null }))).iss, issuer.issuer);
});

test('the default bounded staleness is 900 s, as in the Python verifier', async () => {
  assert.equal(DEFAULTS.statusListMaxStale, 900);
  issuer.state.lists.set('stale', { statuses: [0], ttl: 10, expIn: 86400 });
  const clock = steppedClock();
  const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE, clock });
  const token = await issuer.token({ list: 'stale', idx: 0, exp: Math.floor(Date.now() / 1000) + 3600 });
  await verifier.verify(token);
  issuer.state.down = true;
  try {
    clock.offset = 899;
    await verifier.verify(token);
    clock.offset = 901;
    assert.equal(await reasonOf(verifier, token), 'status_unavailable');
  } finally {
    issuer.state.down = false;
  }
});

test('a status list refresh sends If-None-Match; a 304 keeps the copy fresh for another ttl', async () => {
  const statuses = [0, 0, 0];
  issuer.state.lists.set('etag', { statuses, ttl: 60, expIn: 86400 });
  const clock = steppedClock();
  const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE, clock, statusListMaxStale: 100 });
  const token = await issuer.token({ list: 'etag', idx: 2, exp: Math.floor(Date.now() / 1000) + 3600 });
  const fetches = issuer.state.fetches;
  const notModified = issuer.state.notModified;
  await verifier.verify(token);
  clock.offset = 61; // past the ttl: a conditional GET, answered 304
  await verifier.verify(token);
  assert.equal(issuer.state.fetches - fetches, 2);
  assert.equal(issuer.state.notModified - notModified, 1);
  // Fresh again from the 304 on: no request within the next ttl, and usable for
  // statusListMaxStale from then (61 + 90 s is past 100 s from the first fetch).
  issuer.state.down = true;
  try {
    clock.offset = 61 + 59;
    await verifier.verify(token);
    assert.equal(issuer.state.fetches - fetches, 2);
    clock.offset = 61 + 90;
    await verifier.verify(token);
  } finally {
    issuer.state.down = false;
  }
  // A changed list has a new ETag: a 200, and its bits count. The issuer failed last
  // time, so the last copy answers at once while a retry runs in the background (past the
  // retry interval after the failed attempt); the retry brings the new list.
  statuses[2] = 1;
  clock.offset = 61 + 90 + 6;
  let reason = await reasonOf(verifier, token);
  for (let i = 0; i < 100 && reason !== 'revoked'; i += 1) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    reason = await reasonOf(verifier, token);
  }
  assert.equal(reason, 'revoked');
  assert.equal(issuer.state.notModified - notModified, 1);
});

test('a JWKS refetch sends If-None-Match; a 304 keeps the set, a new set replaces it', async () => {
  // cacheMaxAge 0: every verification asks for the key set again.
  const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE, status: 'off', jwksCacheMaxAge: 0 });
  const fetches = issuer.state.jwksFetches;
  const notModified = issuer.state.jwksNotModified;
  const token = await issuer.token({ status: null });
  await verifier.verify(token);
  await verifier.verify(token);
  await verifier.verify(token);
  assert.equal(issuer.state.jwksFetches - fetches, 3);
  assert.equal(issuer.state.jwksNotModified - notModified, 2);
  await verifier.refresh(); // an explicit refresh is conditional too
  assert.equal(issuer.state.jwksNotModified - notModified, 3);
  await verifier.verify(token);
});
