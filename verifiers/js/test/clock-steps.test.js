// A verifier host whose wall clock is stepped back while it runs (NTP correcting a clock
// that was ahead): the caches it counts on that clock must not outlive their time by the
// length of the step. The issuer is helpers/issuer.js (jose, over real HTTP).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { createVerifier } from '../src/index.js';
import { newKey, startIssuer } from './helpers/issuer.js';

const AUDIENCE = 'https://sync.example.com';
let issuer;

before(async () => {
  issuer = await startIssuer();
});
after(() => issuer.close());

test('a key set fetched before the clock was stepped back is fetched again: a rotation\'s new kid verifies', async () => {
  // jose reads Date.now() itself: the whole process's clock is moved, the issuer's with it.
  const realNow = Date.now;
  let ahead = 120_000; // the host's clock two minutes ahead ...
  Date.now = () => realNow() + ahead;
  try {
    const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE, status: 'off' });
    await verifier.verify(await issuer.token({ status: null }));
    const fetches = issuer.state.jwksFetches;
    ahead = 0; // ... stepped back to the right time
    const rotated = await newKey();
    issuer.state.keys.push(rotated);
    // jose counts its max-age and the cooldown of a refetch for an unknown kid from the
    // fetch, on the clock as it was: without a new fetch this is unknown_kid for 2 minutes.
    const claims = await verifier.verify(await issuer.token({ status: null, signWith: rotated }));
    assert.equal(claims.sub, 'user-1');
    assert.equal(issuer.state.jwksFetches - fetches, 1);
    await verifier.verify(await issuer.token({ status: null, signWith: rotated }));
    assert.equal(issuer.state.jwksFetches - fetches, 1, 'once per step, not per verification');
  } finally {
    Date.now = realNow;
    issuer.state.keys = [issuer.key];
  }
});

test('a status list fetched before the clock was stepped back is fetched again: a revocation is seen within its ttl', async () => {
  const statuses = [0];
  issuer.state.lists.set('step', { statuses, ttl: 60 });
  const clock = () => Date.now() + clock.offset * 1000;
  clock.offset = 50; // the verifier host 50 s ahead (within the leeway) ...
  const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE, clock });
  const token = await issuer.token({ list: 'step', idx: 0 });
  await verifier.verify(token);
  const fetches = issuer.state.fetches;
  statuses[0] = 1; // revoked at the issuer
  clock.offset = 0; // ... stepped back: the copy's ttl, counted from its fetch at +50 s, would last 110 s
  await assert.rejects(verifier.verify(token), (err) => err.reason === 'revoked');
  assert.equal(issuer.state.fetches - fetches, 1);
});

test('a status list fetched before the clock was stepped back is not used past statusListMaxStale while the issuer is down', async () => {
  issuer.state.lists.set('stale', { statuses: [0], ttl: 60, expIn: 3600 });
  const clock = () => Date.now() + clock.offset * 1000;
  clock.offset = 600; // the verifier host ten minutes ahead ...
  const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE, clock, statusListMaxStale: 900 });
  const token = await issuer.token({ list: 'stale', idx: 0, exp: Math.floor(Date.now() / 1000) + 3600 });
  try {
    await verifier.verify(token);
    issuer.state.down = true;
    clock.offset = 0; // ... stepped back; the issuer cannot be reached: the copy answers
    await verifier.verify(token);
    // 901 s after the fetch: the copy is past statusListMaxStale (the Python verifier,
    // on its monotonic clock, refuses here). It was counted from the fetch on the clock
    // before the step, so it was used for another 600 s.
    clock.offset = 901;
    await assert.rejects(verifier.verify(token), (err) => err.reason === 'status_unavailable');
  } finally {
    issuer.state.down = false;
  }
});

test('after a step back with the issuer down, a kid the last set lacks is jwks_unavailable (as the Python verifier says), not unknown_kid', async () => {
  const realNow = Date.now;
  let ahead = 120_000;
  Date.now = () => realNow() + ahead;
  try {
    const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE, status: 'off', timeout: 0.2 });
    await verifier.verify(await issuer.token({ status: null }));
    ahead = 0;
    issuer.state.hang = 1000; // the issuer no longer answers in time
    const rotated = await newKey();
    issuer.state.keys.push(rotated);
    // jose holds the set fetched "in the future" as fresh and cooling down: it refused the
    // kid as unknown without asking, while the refetch made for the step had just failed.
    await assert.rejects(verifier.verify(await issuer.token({ status: null, signWith: rotated })), (err) => err.reason === 'jwks_unavailable');
    // The keys it holds still verify their tokens meanwhile.
    assert.equal((await verifier.verify(await issuer.token({ status: null }))).sub, 'user-1');
  } finally {
    Date.now = realNow;
    issuer.state.hang = 0;
    issuer.state.keys = [issuer.key];
  }
});

test('after a step back with the issuer down, the retries of the key set run in the background', async () => {
  const realNow = Date.now;
  let ahead = 0;
  Date.now = () => realNow() + ahead;
  try {
    const token = await issuer.token({ status: null }); // issued on the right time
    ahead = 120_000;
    const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE, status: 'off', timeout: 0.3, jwksCooldown: 0.5 });
    await verifier.verify(token);
    ahead = 0;
    issuer.state.hang = 1000; // the issuer no longer answers in time
    await verifier.verify(token); // the one verification that finds out (the refetch for the step)
    for (let retry = 0; retry < 3; retry += 1) {
      await new Promise((resolve) => setTimeout(resolve, 600)); // past the cooldown: a retry is due
      const started = realNow();
      await verifier.verify(token);
      // Each retry held this verification for the whole timeout.
      assert.ok(realNow() - started < 150, `${realNow() - started} ms`);
    }
  } finally {
    Date.now = realNow;
    issuer.state.hang = 0;
  }
});
