// Across three rotations and a retire, through a real `authserver serve` and its CLI, no
// valid token is ever rejected (issue 15 item 4, the JS half).
//
// Time is shrunk the way tests/e2e/test_rotation.py shrinks it: a new key is published 2 s
// before it signs (1 h by default), the JWKS max-age is 1 s, tokens live 30 s (long enough
// to outlast the CLI calls on a loaded machine, so tokens of earlier keys are still there to
// re-check after the retire). The verifiers keep every default except their two JWKS
// timings, scaled down with the server's:
//
// * `refetching`: caches the JWKS for 1 s (the default 300 s is below the default 1 h
//   publish-ahead; 1 s is below 2 s) and refetches at once on an unknown kid;
// * `caching`: the same cache, and a 30 s cooldown, so an unknown kid never refetches here:
//   it relies on the publish-ahead alone.
//
// Rotations are `authserver keys rotate`; the retire is `authserver keys retire KID`. Tokens
// are issued and checked all the while, also while those commands run.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { decodeJwt, decodeProtectedHeader } from 'jose';

import { createVerifier, InvalidTokenError } from '../src/index.js';
import { startAuthserver } from './helpers/authserver.js';

const AUDIENCE = 'https://sync.example.com';
const TTL = 30;
let server;
let client;

before(async () => {
  server = await startAuthserver({
    workers: 2,
    settings: {
      AUTHSERVER_KEY_PUBLISH_AHEAD: '2s',
      AUTHSERVER_JWKS_MAX_AGE: '1s',
      AUTHSERVER_KEY_ROTATION_INTERVAL: '1h', // only the CLI rotates
      AUTHSERVER_DEFAULT_TOKEN_TTL: `${TTL}s`,
      AUTHSERVER_MAX_TOKEN_TTL: `${TTL}s`,
      AUTHSERVER_KEY_RETENTION_LEEWAY: '1s',
      AUTHSERVER_KEY_CACHE_SECONDS: '0s',
    },
  });
  client = server.createClient('--name', 'rotation', '--audience', AUDIENCE);
});
after(() => server?.close());

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const jwksKids = async () => (await (await fetch(`${server.issuer}/.well-known/jwks.json`)).json()).keys.map((k) => k.kid);

test('three rotations and a retire: no valid token rejected; the retired key\'s tokens are, once caches expire', { timeout: 90_000 }, async () => {
  const verifiers = {
    refetching: createVerifier({ issuer: server.issuer, audience: AUDIENCE, jwksCacheMaxAge: 1, jwksCooldown: 0 }),
    caching: createVerifier({ issuer: server.issuer, audience: AUDIENCE, jwksCacheMaxAge: 1, jwksCooldown: 30 }),
  };
  const failures = [];
  const issued = []; // {token, kid, exp}
  let checks = 0;

  const retiring = new Set(); // kids whose tokens are no longer expected to verify

  async function check(token, what, only = Object.keys(verifiers)) {
    if (retiring.has(decodeProtectedHeader(token).kid)) return;
    for (const name of only) {
      checks += 1;
      try {
        assert.equal((await verifiers[name].verify(token)).sub, 'user-1');
      } catch (err) {
        failures.push(`${name} rejected ${what} token kid=${decodeProtectedHeader(token).kid}: ${err.message}`);
      }
    }
  }
  async function issueAndCheck() {
    const token = await server.token(client, { sub: 'user-1' });
    const { kid } = decodeProtectedHeader(token);
    issued.push({ token, kid, exp: decodeJwt(token).exp });
    await check(token, 'new');
    // Older tokens of keys that stopped signing verify while unexpired.
    for (const old of issued.slice(-40, -1)) if (old.exp - Date.now() / 1000 > 1.5) await check(old.token, 'older');
    return kid;
  }

  /** Run a CLI command while tokens keep being issued and checked. */
  async function withTraffic(promise) {
    let done = false;
    const result = promise.finally(() => (done = true));
    while (!done) {
      await issueAndCheck();
      await Promise.race([result.catch(() => {}), sleep(150)]);
    }
    return result;
  }

  const kids = [await issueAndCheck()];
  for (let rotation = 1; rotation <= 3; rotation += 1) {
    const next = await withTraffic(server.cliJsonAsync('keys', 'rotate'));
    assert.ok(next.kid && !kids.includes(next.kid), JSON.stringify(next));
    assert.ok((await jwksKids()).includes(next.kid), 'published before it signs');
    const deadline = Date.now() + 15_000;
    while (kids.at(-1) !== next.kid) {
      assert.ok(Date.now() < deadline, `key ${next.kid} did not start signing in 15 s`);
      const kid = issued.at(-1).kid;
      if (kid !== kids.at(-1)) kids.push(kid);
      if (kid !== next.kid) {
        await sleep(150);
        await issueAndCheck();
      }
    }
  }
  assert.equal(new Set(kids).size, 4, kids.join(' '));
  assert.deepEqual(failures, []);

  // -- emergency retire of the current key ------------------------------------------------
  const victim = await server.token(client, { sub: 'user-1' });
  const retiredKid = decodeProtectedHeader(victim).kid;
  assert.equal(retiredKid, kids.at(-1));
  await check(victim, 'pre-retire');
  // Default JWKS timings (5 min cache): it keeps a retired key until refresh() is called.
  const defaults = createVerifier({ issuer: server.issuer, audience: AUDIENCE });
  assert.equal((await defaults.verify(victim)).sub, 'user-1');
  retiring.add(retiredKid);
  // No traffic while it runs: the server has no signing key for a moment during a retire
  // (the retired key is written before its successor exists), and /token answers 503.
  const retired = await server.cliJsonAsync('keys', 'retire', retiredKid);
  assert.equal(retired.state, 'gone');
  assert.ok(retired.current_kid && retired.current_kid !== retiredKid);
  assert.ok(!(await jwksKids()).includes(retiredKid));

  // The key that takes over is unknown to both caches: the refetching verifier fetches it
  // at once, the caching one once its 1 s copy expires.
  const successor = await server.token(client, { sub: 'user-1' });
  assert.notEqual(decodeProtectedHeader(successor).kid, retiredKid);
  await check(successor, 'successor', ['refetching']);
  await sleep(1200);
  await check(successor, 'successor');
  // Tokens of keys that merely stopped signing still verify; the retired key's do not.
  let rechecked = 0;
  for (const old of issued) {
    if (old.kid !== retiredKid && old.exp - Date.now() / 1000 > 1) {
      await check(old.token, 'post-retire older');
      rechecked += 1;
    }
  }
  assert.ok(rechecked > 0, 'no unexpired token of an earlier key left to re-check');
  for (const verifier of Object.values(verifiers)) {
    const err = await verifier.verify(victim).catch((e) => e);
    assert.ok(err instanceof InvalidTokenError);
    assert.equal(err.reason, 'unknown_kid');
  }
  assert.equal((await defaults.verify(victim)).sub, 'user-1', 'cached for jwksCacheMaxAge');
  await defaults.refresh();
  const err = await defaults.verify(victim).catch((e) => e);
  assert.equal(err.reason, 'unknown_kid', 'refresh() drops the retired key at once');
  assert.deepEqual(failures, []);
  assert.ok(checks > 50, `only ${checks} checks`);
});
