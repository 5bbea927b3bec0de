// The http and Express middleware over real sockets, with tokens from a real authserver.

import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, test } from 'node:test';
import express from 'express';

import { bearerToken, createVerifier, expressAuth, InvalidTokenError, requireToken, sendRefusal } from '../src/index.js';
import { freePort, sharedAuthserver } from './helpers/authserver.js';

const AUDIENCE = 'https://sync.example.com';
let server;
let client;
let verifier;
const listening = [];

before(async () => {
  server = await sharedAuthserver();
  client = server.client;
  verifier = createVerifier({ issuer: server.issuer, audience: AUDIENCE });
});
after(async () => {
  for (const s of listening) s.close();
});

async function listen(handler) {
  const app = http.createServer(handler);
  const port = await freePort();
  await new Promise((r) => app.listen(port, '127.0.0.1', r));
  listening.push(app);
  return `http://127.0.0.1:${port}`;
}

async function get(url, token, scheme = 'Bearer') {
  const response = await fetch(url, { headers: token === undefined ? {} : { authorization: `${scheme} ${token}` } });
  return { status: response.status, challenge: response.headers.get('www-authenticate'), body: await response.json() };
}

const apps = {
  'node http': () =>
    listen(
      requireToken(
        verifier,
        (req, res) => {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ sub: req.auth?.sub ?? null }));
        },
        { publicPaths: ['/healthz'] },
      ),
    ),
  express: () => {
    const app = express();
    app.use(expressAuth(verifier, { publicPaths: ['/healthz'] }));
    app.get(/.*/, (req, res) => res.json({ sub: req.auth?.sub ?? null }));
    return listen(app);
  },
};

test('express: on a public path req.auth is null, whatever an earlier middleware set', async () => {
  const app = express();
  app.use((req, res, next) => {
    req.auth = { sub: 'admin' }; // left by another middleware
    next();
  });
  app.use(expressAuth(verifier, { publicPaths: ['/healthz'] }));
  app.get(/.*/, (req, res) => res.json({ sub: req.auth?.sub ?? null }));
  const base = await listen(app);
  assert.deepEqual((await get(`${base}/healthz`)).body, { sub: null });
});

for (const [name, make] of Object.entries(apps)) {
  test(`${name}: valid token → handler with req.auth; RFC 6750 answers otherwise`, async () => {
    const base = await make();
    const token = await server.token(client, { sub: 'user-9' });

    assert.deepEqual(await get(`${base}/data`, token), { status: 200, challenge: null, body: { sub: 'user-9' } });
    assert.deepEqual(await get(`${base}/data`, token, 'bearer'), { status: 200, challenge: null, body: { sub: 'user-9' } });

    // §3.1: no credentials → 401 with a bare challenge, no error code.
    assert.deepEqual(await get(`${base}/data`), {
      status: 401,
      challenge: 'Bearer',
      body: { error: 'invalid_token', reason: 'missing_token' },
    });
    assert.equal((await get(`${base}/data`, token, 'Basic')).challenge, 'Bearer');

    // A refused token → 401 invalid_token with the reason.
    const [h, p, s] = token.split('.');
    const tampered = `${h}.${p}.${s.slice(0, -4)}AAAA`;
    assert.deepEqual(await get(`${base}/data`, tampered), {
      status: 401,
      challenge: 'Bearer error="invalid_token", error_description="bad_signature"',
      body: { error: 'invalid_token', reason: 'bad_signature' },
    });
    assert.equal((await get(`${base}/data`, 'not-a-jwt')).challenge, 'Bearer error="invalid_token", error_description="malformed"');

    // A public path needs no token.
    assert.deepEqual(await get(`${base}/healthz`), { status: 200, challenge: null, body: { sub: null } });
  });
}

test('keys unavailable → 503 with Retry-After, not a 401 that makes clients drop the token', async () => {
  const downPort = await freePort();
  const down = createVerifier({ issuer: `http://127.0.0.1:${downPort}`, audience: AUDIENCE });
  const base = await listen(requireToken(down, (req, res) => res.end('{}')));
  const token = await server.token(client, { sub: 'user-9' });
  const response = await fetch(`${base}/x`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(response.status, 503);
  assert.equal(response.headers.get('retry-after'), '5');
  assert.equal(response.headers.get('www-authenticate'), null);
  assert.deepEqual(await response.json(), { error: 'temporarily_unavailable', reason: 'jwks_unavailable' });
});

/** GET with raw header pairs (several Authorization headers, odd spacing), as sent. */
function rawGet(url, headerPairs) {
  return new Promise((resolve, reject) => {
    // Raw header pairs get no Host header added: HTTP/1.1 needs one.
    const headers = [['Host', new URL(url).host], ...headerPairs].flat();
    const request = http.request(url, { headers }, (response) => {
      let text = '';
      response.on('data', (d) => (text += d));
      response.on('end', () =>
        resolve({ status: response.statusCode, challenge: response.headers['www-authenticate'] ?? null, body: JSON.parse(text) }),
      );
    });
    request.on('error', reject);
    request.end();
  });
}

test('node http: a public path runs the handler with req.auth null, never undefined', async () => {
  // The README's handler: req.auth.sub on a public path threw in an unawaited promise and
  // the process died on one unauthenticated GET /healthz.
  const seen = [];
  const base = await listen(
    requireToken(
      verifier,
      (req, res) => {
        seen.push(req.auth);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(req.auth ? req.auth.sub : 'ok'));
      },
      { publicPaths: ['/healthz'] },
    ),
  );
  assert.deepEqual(await get(`${base}/healthz`), { status: 200, challenge: null, body: 'ok' });
  assert.deepEqual(seen, [null]);
});

for (const [name, make] of Object.entries(apps)) {
  test(`${name}: two Authorization headers or a malformed Bearer header are 400 invalid_request, a value that is no token is invalid_token`, async () => {
    const base = await make();
    const token = await server.token(client, { sub: 'user-dup' });
    // Node keeps only the first of repeated Authorization headers: the handler ran as that
    // user, whatever a proxy in front had read.
    const twice = await rawGet(`${base}/data`, [
      ['Authorization', `Bearer ${token}`],
      ['Authorization', 'Bearer another.token.here'],
    ]);
    // RFC 6750 §3.1: a request that "repeats the same parameter" or "is otherwise
    // malformed" is 400 invalid_request.
    const invalidRequest = { status: 400, challenge: 'Bearer error="invalid_request"', body: { error: 'invalid_request', reason: 'invalid_request' } };
    assert.deepEqual(twice, invalidRequest);
    for (const malformed of ['Bearer', 'Bearer   ', `Bearer ${token} more`]) {
      assert.deepEqual(await rawGet(`${base}/data`, [['Authorization', malformed]]), invalidRequest, malformed);
    }
    // A Bearer value that is no token was "no credentials" (a bare challenge): it is a
    // token the verifier refuses, as the Python middleware answers it.
    const odd = await rawGet(`${base}/data`, [['Authorization', 'Bearer ###']]);
    assert.deepEqual(odd, {
      status: 401,
      challenge: 'Bearer error="invalid_token", error_description="malformed"',
      body: { error: 'invalid_token', reason: 'malformed' },
    });
    assert.equal((await rawGet(`${base}/data`, [['Authorization', `Bearer ${token}`]])).status, 200);
  });
}

test('bearerToken: no bearer credentials is null, a malformed Bearer header throws invalid_request (as the Python package)', async () => {
  const header = (authorization) => ({ headers: authorization === undefined ? {} : { authorization } });
  for (const none of [undefined, '', 'Token abc', 'Basic dXNlcjpwYXNz', 'Bearerabc']) {
    assert.equal(bearerToken(header(none)), null, String(none));
  }
  for (const malformed of ['Bearer', 'Bearer ', 'bearer    ', 'Bearer a b', 'Bearer a.b.c, Bearer d.e.f']) {
    assert.throws(() => bearerToken(header(malformed)), (err) => err.reason === 'invalid_request' && err.status === 400, malformed);
  }
  assert.equal(bearerToken(header('Bearer abc.def.ghi')), 'abc.def.ghi');
  assert.equal(bearerToken(header('  BEARER   abc  ')), 'abc');
});

test('sendRefusal puts the realm first in every challenge', async () => {
  const answers = {};
  const base = await listen((req, res) => sendRefusal(res, new InvalidTokenError(req.url.slice(1)), { realm: 'sync' }));
  for (const reason of ['missing_token', 'invalid_request', 'expired']) answers[reason] = (await get(`${base}/${reason}`)).challenge;
  assert.deepEqual(answers, {
    missing_token: 'Bearer realm="sync"',
    invalid_request: 'Bearer realm="sync", error="invalid_request"',
    expired: 'Bearer realm="sync", error="invalid_token", error_description="expired"',
  });
});

test('a realm a header cannot carry is refused where the middleware is created, not at a request', async () => {
  // Node refused it in writeHead at the first refused request (ERR_INVALID_CHAR), inside the
  // middleware's promise: an unhandled rejection that ended the process.
  const verifier = createVerifier({ issuer: server.issuer, audience: 'https://sync.example.com' });
  for (const realm of ['sync ✓', 'sync\r\nSet-Cookie: a=b', 'line\nbreak', 42]) {
    assert.throws(() => requireToken(verifier, () => {}, { realm }), TypeError, String(realm));
    assert.throws(() => expressAuth(verifier, { realm }), TypeError, String(realm));
  }
  // Latin-1 (obs-text) is what a header carries: it still works, over a real socket.
  const base = await listen(requireToken(verifier, (req, res) => res.end('ok'), { realm: 'Café "sync"' }));
  const answer = await get(`${base}/sync`);
  assert.equal(answer.status, 401);
  assert.equal(answer.challenge, 'Bearer realm="Café sync"');
});
