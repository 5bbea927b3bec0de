// Token Status List checks (draft-ietf-oauth-status-list §8.3) against lists signed in this
// process with jose and served over real HTTP (test/helpers/issuer.js), for the cases the
// real server cannot be made to produce. The revocation through a real `authserver serve`
// is in server.test.js.

import assert from 'node:assert/strict';
import { createSign, generateKeyPairSync } from 'node:crypto';
import { after, before, test } from 'node:test';

import { exportJWK } from 'jose';

import { createVerifier, InvalidTokenError } from '../src/index.js';
import { newKey, startIssuer } from './helpers/issuer.js';

const AUDIENCE = 'https://sync.example.com';
let issuer;

before(async () => {
  issuer = await startIssuer();
});
after(() => issuer.close());

/** A clock the test moves: real time plus `offset` seconds. */
function steppedClock() {
  const clock = () => Date.now() + clock.offset * 1000;
  clock.offset = 0;
  return clock;
}

async function rejects(promise, reason) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof InvalidTokenError, `not an InvalidTokenError: ${err}`);
    assert.equal(err.reason, reason, err.message);
    return true;
  });
}

function setList(id, list) {
  issuer.state.lists.set(id, { statuses: [], ...list });
}

test('VALID verifies, INVALID is revoked, SUSPENDED is suspended, others are refused', async () => {
  setList('a', { statuses: [0, 1, 2, 3], bits: 2 });
  const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE });
  const claims = await verifier.verify(await issuer.token({ list: 'a', idx: 0 }));
  assert.equal(claims.sub, 'user-1');
  await rejects(verifier.verify(await issuer.token({ list: 'a', idx: 1 })), 'revoked');
  await rejects(verifier.verify(await issuer.token({ list: 'a', idx: 2 })), 'suspended');
  await rejects(verifier.verify(await issuer.token({ list: 'a', idx: 3 })), 'invalid_status');
  // §8.3 step 6: an index outside the list is refused (1024 entries of 2 bits here).
  await rejects(verifier.verify(await issuer.token({ list: 'a', idx: 1024 })), 'invalid_status');
  await verifier.verify(await issuer.token({ list: 'a', idx: 1023 }));
});

test('a revocation is seen once the ttl has passed, not before; the list is fetched once per ttl', async () => {
  const statuses = [0, 0, 0];
  setList('ttl', { statuses, ttl: 60 });
  const clock = steppedClock();
  const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE, clock });
  const token = await issuer.token({ list: 'ttl', idx: 2 });
  const before = issuer.state.fetches;
  await verifier.verify(token);
  await verifier.verify(token);
  assert.equal(issuer.state.fetches - before, 1, 'cached within ttl');

  statuses[2] = 1; // revoked at the issuer
  clock.offset = 59;
  await verifier.verify(token); // still within ttl: the cached list says VALID
  clock.offset = 61;
  await rejects(verifier.verify(token), 'revoked');
  assert.equal(issuer.state.fetches - before, 2);
});

test('the list is not used after its exp, even within ttl', async () => {
  setList('exp', { statuses: [0], ttl: 600, expIn: 30 });
  const clock = steppedClock();
  const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE, clock });
  const token = await issuer.token({ list: 'exp', idx: 0, exp: Math.floor(Date.now() / 1000) + 3600 });
  await verifier.verify(token);
  const before = issuer.state.fetches;
  clock.offset = 31 + 30; // past exp and the 30 s leeway: a fresh list is fetched
  issuer.state.lists.get('exp').expIn = 3600;
  await verifier.verify(token);
  assert.equal(issuer.state.fetches - before, 1);
});

test('under steady use a list is refreshed in the background before its ttl ends', async () => {
  const statuses = [0, 0, 0];
  setList('ahead', { statuses, ttl: 60 });
  const clock = steppedClock();
  const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE, clock });
  const token = await issuer.token({ list: 'ahead', idx: 1 });
  const before = issuer.state.fetches;
  await verifier.verify(token);
  clock.offset = 40;
  await verifier.verify(token);
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(issuer.state.fetches - before, 1, 'not yet in the last fifth of the ttl');
  statuses[1] = 1;
  clock.offset = 50;
  await verifier.verify(token); // the copy answers; a refresh starts meanwhile
  // The issuer counts the fetch when it arrives; the verifier holds the new copy only once
  // it has checked its signature: wait for that (a fixed pause failed on a loaded machine).
  let seen;
  for (let i = 0; i < 250; i += 1) {
    seen = await verifier.verify(token).then(() => 'valid', (err) => err.reason);
    if (seen !== 'valid') break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.equal(seen, 'revoked', 'the new copy, fetched ahead');
  assert.equal(issuer.state.fetches - before, 2);
  clock.offset = 61;
  await rejects(verifier.verify(token), 'revoked');
  assert.equal(issuer.state.fetches - before, 2, 'no fetch at the ttl: the copy is already new');
});

for (const later of [61, 600]) {
  test(`an old failure does not make a stale copy answer (next use ${later} s after the fetch)`, async () => {
    const statuses = [0, 0, 0];
    setList(`old-failure-${later}`, { statuses, ttl: 60, expIn: 3600 });
    const clock = steppedClock();
    const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE, clock });
    const token = await issuer.token({ list: `old-failure-${later}`, idx: 1, exp: Math.floor(Date.now() / 1000) + 3600 });
    await verifier.verify(token);
    issuer.state.down = true;
    const before = issuer.state.listRequests;
    try {
      clock.offset = 50;
      await verifier.verify(token); // in the last fifth: a refresh ahead, which fails
      for (let i = 0; i < 100 && issuer.state.listRequests - before < 1; i += 1) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal(issuer.state.listRequests - before, 1);
      clock.offset = 52;
      await verifier.verify(token); // within the retry interval: no second attempt
      assert.equal(issuer.state.listRequests - before, 1, 'a failing list is not asked once per verification');
    } finally {
      issuer.state.down = false;
    }
    statuses[1] = 1;
    clock.offset = later;
    await rejects(verifier.verify(token), 'revoked');
  });
}

test('an issuer that stops answering holds back one verification, not one per retry', async () => {
  setList('hang', { statuses: [0], ttl: 60, expIn: 3600 });
  const clock = steppedClock();
  const verifier = createVerifier({
    issuer: issuer.issuer, audience: AUDIENCE, clock, timeout: 0.5, jwksCacheMaxAge: 3600,
  });
  const token = await issuer.token({ list: 'hang', idx: 0, exp: Math.floor(Date.now() / 1000) + 3600 });
  await verifier.verify(token);
  issuer.state.hang = 1000;
  try {
    clock.offset = 61;
    let started = Date.now();
    await verifier.verify(token); // finds out: waits for the timeout, then the last copy
    assert.ok(Date.now() - started >= 450, `waited ${Date.now() - started} ms`);
    for (const offset of [67, 73, 79]) {
      clock.offset = offset; // past the retry interval each time: retried in the background
      started = Date.now();
      await verifier.verify(token);
      assert.ok(Date.now() - started < 300, `waited ${Date.now() - started} ms at ${offset} s`);
    }
  } finally {
    issuer.state.hang = 0;
  }
  await new Promise((resolve) => setTimeout(resolve, 1200)); // let the last retry end
});

test('a list that cannot be fetched: the last copy is used up to statusListMaxStale, then fail closed', async () => {
  setList('down', { statuses: [0], ttl: 10, expIn: 3600 });
  const clock = steppedClock();
  const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE, clock, statusListMaxStale: 120 });
  const token = await issuer.token({ list: 'down', idx: 0, exp: Math.floor(Date.now() / 1000) + 3600 });
  await verifier.verify(token);
  issuer.state.down = true;
  try {
    clock.offset = 11; // ttl passed, the refresh fails: the copy is 11 s old, within 120 s
    await verifier.verify(token);
    clock.offset = 119;
    await verifier.verify(token);
    clock.offset = 121;
    const err = await verifier.verify(token).catch((e) => e);
    assert.ok(err instanceof InvalidTokenError);
    assert.equal(err.reason, 'status_unavailable');
    assert.equal(err.status, 503);
  } finally {
    issuer.state.down = false;
  }
  clock.offset = 121 + 6; // past the retry interval: fetched again
  await verifier.verify(token);
});

test('a list never fetched and unreachable: status_unavailable, asked again only after the retry interval', async () => {
  const clock = steppedClock();
  const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE, clock });
  // No list 'missing' at the issuer: 404.
  const token = await issuer.token({ list: 'missing', idx: 0 });
  const before = issuer.state.listRequests;
  await rejects(verifier.verify(token), 'status_unavailable');
  await rejects(verifier.verify(token), 'status_unavailable');
  assert.equal(issuer.state.listRequests - before, 1, 'not asked again within statusListRetryInterval (5 s)');
  clock.offset = 6;
  await rejects(verifier.verify(token), 'status_unavailable');
  assert.equal(issuer.state.listRequests - before, 2);
});

test('a list that arrives expired (within the leeway) is a failed fetch: asked again only after the retry interval', async () => {
  // jose's clockTolerance let a list 10 s past its exp through; unusable at once, it was
  // stored as a success, so every verification fetched it again (50 verifications, 50
  // fetches), where the Python verifier refuses such a list and waits min_refetch_interval.
  setList('expired-within-leeway', { statuses: [0], expIn: -10 });
  const clock = steppedClock();
  const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE, clock });
  const token = await issuer.token({ list: 'expired-within-leeway', idx: 0 });
  const before = issuer.state.listRequests;
  for (let i = 0; i < 5; i += 1) await rejects(verifier.verify(token), 'status_unavailable');
  assert.equal(issuer.state.listRequests - before, 1, 'not asked again within statusListRetryInterval (5 s)');
  clock.offset = 6;
  await rejects(verifier.verify(token), 'status_unavailable');
  assert.equal(issuer.state.listRequests - before, 2);
});

test('a 304 for a copy past its exp is a failed fetch: asked again only after the retry interval', async () => {
  // The issuer still serves the copy it served (same ETag) after that copy's exp: the 304
  // renewed nothing usable yet counted as a success, and every verification fetched again.
  setList('exp-304', { statuses: [0], ttl: 10, expIn: 20 });
  const clock = steppedClock();
  const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE, clock });
  const token = await issuer.token({ list: 'exp-304', idx: 0, exp: Math.floor(Date.now() / 1000) + 3600 });
  await verifier.verify(token);
  const before = issuer.state.listRequests;
  clock.offset = 21;
  for (let i = 0; i < 5; i += 1) await rejects(verifier.verify(token), 'status_unavailable');
  assert.equal(issuer.state.listRequests - before, 1, 'not asked again within statusListRetryInterval (5 s)');
});

test('Status List Tokens that break §5.1 or §8.3 are not used', async () => {
  const stranger = await newKey();
  const cases = {
    'sub-mismatch': { sub: `${issuer.issuer}/statuslists/other` },
    'wrong-typ': { typ: 'JWT' },
    'at-jwt-typ': { typ: 'at+jwt' },
    'foreign-key': { signWith: stranger },
    'expired': { expIn: -120 },
    'wrong-iss': { iss: 'https://evil.example' },
    // Beyond any time (the year 5138), as the Python verifier refuses them: 1e400 read as
    // Infinity, and a list "usable forever" was used.
    'exp-beyond-any-time': { expIn: 1e12 },
    'ttl-beyond-any-duration': { ttl: 1e12 },
  };
  for (const [id, list] of Object.entries(cases)) {
    setList(id, { statuses: [0], ...list });
    const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE });
    await rejects(verifier.verify(await issuer.token({ list: id, idx: 0 })), 'status_unavailable');
  }
  // An access token is not a status list, even when it sits at the list's URL.
  setList('ok', { statuses: [0] });
  const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE });
  await verifier.verify(await issuer.token({ list: 'ok', idx: 0 }));
});

test('status option: required refuses tokens without a status claim, off never fetches', async () => {
  const plain = await issuer.token({ status: null });
  await createVerifier({ issuer: issuer.issuer, audience: AUDIENCE }).verify(plain);
  await rejects(createVerifier({ issuer: issuer.issuer, audience: AUDIENCE, status: 'required' }).verify(plain), 'invalid_status');
  setList('off', { statuses: [1] });
  const revoked = await issuer.token({ list: 'off', idx: 0 });
  const before = issuer.state.fetches;
  await createVerifier({ issuer: issuer.issuer, audience: AUDIENCE, status: 'off' }).verify(revoked);
  assert.equal(issuer.state.fetches, before);
  await rejects(createVerifier({ issuer: issuer.issuer, audience: AUDIENCE }).verify(revoked), 'revoked');
});

test('a malformed status claim is invalid_status; an expired token never fetches its list', async () => {
  const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE });
  await rejects(verifier.verify(await issuer.token({ status: { status_list: { idx: -1, uri: issuer.listUri('a') } } })), 'invalid_status');
  // A list outside the issuer's URL space is not fetched.
  const before0 = issuer.state.listRequests;
  for (const uri of ['https://elsewhere.example/statuslists/1', `${issuer.issuer}.evil.example/statuslists/1`, `${issuer.issuer}@evil.invalid/statuslists/1`]) {
    await rejects(verifier.verify(await issuer.token({ status: { status_list: { idx: 0, uri } } })), 'invalid_status');
  }
  assert.equal(issuer.state.listRequests, before0);
  setList('never', { statuses: [0] });
  const before = issuer.state.fetches;
  const now = Math.floor(Date.now() / 1000);
  await rejects(verifier.verify(await issuer.token({ list: 'never', iat: now - 600, nbf: now - 600, exp: now - 300 })), 'expired');
  assert.equal(issuer.state.fetches, before, '§8.3: no status processing for an invalid token');
});

test('keys sharing a kid are each tried, for tokens and status lists (as the Python verifier tries them)', async () => {
  // RFC 7517 §4.5 only says kids SHOULD differ. jose refuses a kid naming several keys
  // (JWKSMultipleMatchingKeys): a set with one key published twice, or two keys under one
  // kid, had every token of that kid refused as unknown_kid.
  const [first, second, stranger] = [await newKey(), await newKey(), await newKey()];
  const shared = (key) => ({ ...key, kid: 'shared', jwk: { ...key.jwk, kid: 'shared' } });
  const saved = issuer.state.keys;
  issuer.state.keys = [shared(first), shared(second), shared(second)];
  try {
    setList('shared-kid', { statuses: [0, 1], signWith: shared(second) });
    const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE });
    for (const key of [first, second]) {
      await verifier.verify(await issuer.token({ list: 'shared-kid', idx: 0, signWith: shared(key) }));
      await rejects(verifier.verify(await issuer.token({ list: 'shared-kid', idx: 1, signWith: shared(key) })), 'revoked');
    }
    await rejects(verifier.verify(await issuer.token({ list: 'shared-kid', idx: 0, signWith: shared(stranger) })), 'bad_signature');
    await rejects(
      verifier.verify(await issuer.token({ list: 'shared-kid', idx: 0, signWith: shared(first), exp: Math.floor(Date.now() / 1000) - 120 })),
      'expired',
    );
  } finally {
    issuer.state.keys = saved;
  }
});

test('a key shorter than 2048 bits is no key: unknown_kid, as the Python verifier says', async () => {
  // RFC 7518 §3.3. jose refused to verify with it (a TypeError, "malformed", blaming the
  // token); the Python verifier verified its tokens.
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 1024 });
  const jwk = { ...publicKey.export({ format: 'jwk' }), kid: 'small', use: 'sig', alg: 'RS256' };
  const saved = issuer.state.keys;
  issuer.state.keys = [...saved, { kid: 'small', jwk }];
  try {
    const now = Math.floor(Date.now() / 1000);
    const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
    const input = `${part({ alg: 'RS256', typ: 'at+jwt', kid: 'small' })}.${part({
      iss: issuer.issuer, sub: 'u', aud: AUDIENCE, client_id: 'c', jti: 'j', iat: now, exp: now + 300,
    })}`;
    const token = `${input}.${createSign('sha256').update(input).sign(privateKey).toString('base64url')}`;
    const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE });
    await rejects(verifier.verify(token), 'unknown_kid');
  } finally {
    issuer.state.keys = saved;
  }
});

test('a private key in the key set is skipped: unknown_kid for its kid, the other keys verify (as in Python)', async () => {
  // jose refuses such a member when a token names it (JWKSInvalid): jwks_unavailable (503)
  // at first, then malformed from the last good set, and each such token, which anyone can
  // send (kids are public), noted the issuer as failing.
  const leaked = await newKey();
  const privateJwk = { ...(await exportJWK(leaked.privateKey)), kid: 'leaked', use: 'sig', alg: 'RS256' };
  const saved = issuer.state.keys;
  issuer.state.keys = [...saved, { kid: 'leaked', jwk: privateJwk }];
  try {
    const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE });
    const forged = await issuer.token({ status: null, signWith: { ...leaked, kid: 'leaked' } });
    for (let i = 0; i < 3; i += 1) {
      await rejects(verifier.verify(forged), 'unknown_kid');
      await verifier.verify(await issuer.token({ status: null }));
    }
  } finally {
    issuer.state.keys = saved;
  }
});

test('entries of the key set that are no JSON object are skipped; the good keys verify (as in Python)', async () => {
  // jose refused the whole set for one such entry ("JSON Web Key Set malformed"): every
  // token jwks_unavailable, where the Python verifier skips what it cannot use.
  const saved = issuer.state.keys;
  issuer.state.keys = [...saved, { jwk: 'junk' }, { jwk: null }, { jwk: [1, 2] }, { jwk: 7 }];
  try {
    const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE });
    await verifier.verify(await issuer.token({ status: null }));
  } finally {
    issuer.state.keys = saved;
  }
});

test('a list whose connection drops: the reason names the cause, not "fetch failed"', async () => {
  // undici rejects with "fetch failed" and the socket error as its cause: the message the
  // verifier gave was that alone, where the JWKS path names the cause.
  setList('reset', { statuses: [0] });
  const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE });
  const token = await issuer.token({ list: 'reset', idx: 0 });
  issuer.state.reset = true;
  try {
    const err = await verifier.verify(token).catch((e) => e);
    assert.ok(err instanceof InvalidTokenError);
    assert.equal(err.reason, 'status_unavailable');
    assert.match(err.message, /UND_ERR_SOCKET|other side closed|ECONNRESET/);
    assert.doesNotMatch(err.message, /fetch failed/);
  } finally {
    issuer.state.reset = false;
  }
});
