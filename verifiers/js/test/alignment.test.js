// What the JS verifier must answer exactly as the Python verifier (authserver_verifier)
// does: the reason for each kind of bad claim, a status claim without status_list, the
// default bounded staleness, and conditional GETs (If-None-Match, 304 = still fresh) for
// status lists and the JWKS. The Python side has the same cases in
// verifiers/python/tests/test_verifier.py.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { createVerifier, DEFAULTS, InvalidTokenError } from '../src/index.js';
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

test('claims with a null, empty or wrongly typed value: the Python verifier\'s reasons', async () => {
  const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE, status: 'off' });
  const now = Math.floor(Date.now() / 1000);
  // [claim, value, reason]: the same table as test_claim_reasons_match_the_js_verifier.
  const cases = [
    ['sub', 123, 'invalid_claim'],
    ['sub', '', 'invalid_claim'],
    ['sub', null, 'missing_claim'],
    ['jti', '', 'invalid_claim'],
    ['jti', null, 'missing_claim'],
    ['client_id', '', 'invalid_claim'],
    ['aud', '', 'invalid_claim'],
    ['aud', [], 'invalid_claim'],
    ['aud', ['https://other.example'], 'wrong_audience'],
    ['iss', 5, 'wrong_issuer'],
    ['iss', null, 'missing_claim'],
    ['exp', 'x', 'invalid_claim'],
    ['exp', true, 'invalid_claim'],
    ['exp', null, 'missing_claim'],
    ['iat', 'x', 'invalid_claim'],
    ['nbf', 'x', 'invalid_claim'],
    ['iat', now + 1000, 'issued_in_future'],
    ['nbf', now + 1000, 'not_yet_valid'],
    ['exp', now - 1000, 'expired'],
  ];
  const seen = [];
  for (const [claim, value] of cases) {
    seen.push([claim, value, await reasonOf(verifier, await issuer.token({ status: null, [claim]: value }))]);
  }
  assert.deepEqual(seen, cases);
});

test('a status claim without status_list fails closed (invalid_status), unless status checks are off', async () => {
  const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE });
  const required = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE, status: 'required' });
  const off = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE, status: 'off' });
  const before = issuer.state.listRequests;
  for (const status of [{}, { status_assertion: { x: 1 } }, { status_list: null }, [], 'revoked', 0]) {
    const token = await issuer.token({ status });
    assert.equal(await reasonOf(verifier, token), 'invalid_status', JSON.stringify(status));
    assert.equal(await reasonOf(required, token), 'invalid_status', JSON.stringify(status));
    assert.equal((await off.verify(token)).sub, 'user-1');
  }
  assert.equal(issuer.state.listRequests, before, 'nothing fetched for them');
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
  // A changed list has a new ETag: a 200, and its bits count.
  statuses[2] = 1;
  clock.offset = 61 + 90 + 6; // past the retry interval after the failed attempt
  assert.equal(await reasonOf(verifier, token), 'revoked');
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
