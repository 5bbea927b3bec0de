// The WebSocket deadline helper with the `ws` package over real sockets: short-lived tokens
// from a real authserver (expires_in), revocation through a status list signed in-process.

import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { once } from 'node:events';
import { PassThrough } from 'node:stream';
import { WebSocket, WebSocketServer } from 'ws';
import { decodeJwt } from 'jose';

import { authenticate, bearerToken, createTokenDeadlines, createVerifier, InvalidTokenError, refuseUpgrade, TOKEN_CLOSE_CODE } from '../src/index.js';
import { freePort, sharedAuthserver, slowVerifier } from './helpers/authserver.js';
import { startIssuer } from './helpers/issuer.js';

const AUDIENCE = 'https://sync.example.com';
let server;
let client;
let issuer;
const cleanups = [];

before(async () => {
  [server, issuer] = await Promise.all([sharedAuthserver(), startIssuer()]);
  client = server.client;
});
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  await issuer?.close();
});

/** A sync server: tokens checked at the upgrade, then tracked by the deadline helper. */
async function syncServer(verifier, options, refuseOptions) {
  const deadlines = createTokenDeadlines(verifier, options);
  const wss = new WebSocketServer({ noServer: true });
  const app = http.createServer((req, res) => res.writeHead(426).end());
  app.on('upgrade', async (req, socket, head) => {
    let claims;
    try {
      claims = await authenticate(verifier, req);
    } catch (err) {
      refuseUpgrade(socket, err, refuseOptions);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      deadlines.track(ws, bearerToken(req), claims);
      ws.on('message', (data) => {
        const message = JSON.parse(data.toString());
        if (message.type === 'echo') ws.send(JSON.stringify({ type: 'echo', sub: deadlines.claims(ws).sub }));
      });
    });
  });
  const port = await freePort();
  await new Promise((r) => app.listen(port, '127.0.0.1', r));
  cleanups.push(async () => {
    deadlines.stop();
    for (const ws of wss.clients) ws.terminate();
    app.closeAllConnections();
    await new Promise((r) => app.close(r));
  });
  return { url: `ws://127.0.0.1:${port}/sync`, deadlines };
}

/** A client that records every message and the close. */
async function connect(url, token) {
  const ws = new WebSocket(url, token ? { headers: { authorization: `Bearer ${token}` } } : {});
  const messages = [];
  const waiters = [];
  ws.on('message', (data) => {
    const message = JSON.parse(data.toString());
    messages.push(message);
    for (const w of waiters.splice(0)) w();
  });
  const closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString(), at: Date.now() })));
  await once(ws, 'open');
  return {
    ws,
    messages,
    closed,
    async next(type, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const i = messages.findIndex((m) => m.type === type);
        if (i >= 0) return messages.splice(i, 1)[0];
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`no ${type} message in ${timeoutMs} ms: ${JSON.stringify(messages)}`);
        await new Promise((resolve) => {
          const t = setTimeout(resolve, left);
          waiters.push(() => (clearTimeout(t), resolve()));
        });
      }
    },
    send: (message) => ws.send(JSON.stringify(message)),
  };
}

test('an upgrade without a valid token is refused with 401 (400 when malformed) and the RFC 6750 challenge', { timeout: 20_000 }, async () => {
  const { url } = await syncServer(createVerifier({ issuer: server.issuer, audience: AUDIENCE }));
  for (const [token, status, challenge, reason] of [
    [undefined, 401, 'Bearer', 'missing_token'],
    ['garbage', 401, 'Bearer error="invalid_token", error_description="malformed"', 'malformed'],
    ['two words', 400, 'Bearer error="invalid_request"', 'invalid_request'],
  ]) {
    const ws = new WebSocket(url, token ? { headers: { authorization: `Bearer ${token}` } } : {});
    ws.on('error', () => {}); // terminate() below aborts the handshake
    const [, response] = await once(ws, 'unexpected-response');
    assert.equal(response.statusCode, status);
    assert.equal(response.headers['www-authenticate'], challenge);
    assert.equal(response.headers['cache-control'], 'no-store');
    let text = '';
    for await (const chunk of response) text += chunk;
    assert.equal(JSON.parse(text).reason, reason);
    ws.terminate();
  }
});

test('an upgrade refusal names the realm it is given, as the HTTP middleware does', { timeout: 20_000 }, async () => {
  const { url } = await syncServer(createVerifier({ issuer: server.issuer, audience: AUDIENCE }), {}, { realm: 'sync' });
  for (const [token, challenge] of [
    [undefined, 'Bearer realm="sync"'],
    ['garbage', 'Bearer realm="sync", error="invalid_token", error_description="malformed"'],
  ]) {
    const ws = new WebSocket(url, token ? { headers: { authorization: `Bearer ${token}` } } : {});
    ws.on('error', () => {});
    const [, response] = await once(ws, 'unexpected-response');
    assert.equal(response.statusCode, 401);
    assert.equal(response.headers['www-authenticate'], challenge);
    response.resume();
    ws.terminate();
  }
});

test('refuseUpgrade: a realm it cannot send throws and leaves no connection open; a Latin-1 realm goes out as Latin-1', () => {
  const err = new InvalidTokenError('missing_token');
  const bad = new PassThrough();
  assert.throws(() => refuseUpgrade(bad, err, { realm: 'sync\n' }), TypeError);
  assert.equal(bad.destroyed, true);
  const good = new PassThrough();
  const chunks = [];
  good.on('data', (chunk) => chunks.push(chunk));
  refuseUpgrade(good, err, { realm: 'caf\u00e9' });
  const sent = Buffer.concat(chunks);
  assert.ok(sent.includes(Buffer.from('WWW-Authenticate: Bearer realm="caf\u00e9"\r\n', 'latin1')));
});

test('a client that resets its connection while its upgrade token is verified does not crash the server', { timeout: 20_000 }, async () => {
  // Node's http server drops its error listener from an upgrade's socket: a reset during
  // the verification (a key or status list fetch) was an uncaught ECONNRESET.
  const slow = slowVerifier(createVerifier({ issuer: server.issuer, audience: AUDIENCE }));
  const { url, deadlines } = await syncServer(slow, { recheckInterval: 0 });
  const { port } = new URL(url);
  const token = await server.token(client, { sub: 'user-1' });
  for (let i = 0; i < 3; i += 1) {
    const raw = net.connect(Number(port), '127.0.0.1');
    await once(raw, 'connect');
    raw.write(
      `GET /sync HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n` +
        `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer ${token}\r\n\r\n`,
    );
    while (slow.calls <= i) await new Promise((r) => setTimeout(r, 5));
    raw.resetAndDestroy();
  }
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(deadlines.size, 0);
  // The server is alive and serves the next client.
  const conn = await connect(url, token);
  conn.send({ type: 'echo' });
  assert.deepEqual(await conn.next('echo'), { type: 'echo', sub: 'user-1' });
  conn.ws.close();
});

test('a connection that closes while its first-message token is verified is not tracked', { timeout: 20_000 }, async () => {
  // The browser pattern: no Authorization header, the token comes in the first message and
  // is verified before track(). A socket closed meanwhile never emits 'close' again: it was
  // tracked until its token's exp (timers, re-checks), long after it was gone.
  const verifier = createVerifier({ issuer: server.issuer, audience: AUDIENCE });
  const deadlines = createTokenDeadlines(verifier, { recheckInterval: 0 });
  const wss = new WebSocketServer({ noServer: true });
  const app = http.createServer();
  const tracked = [];
  app.on('upgrade', (req, socket, head) =>
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.once('message', async (data) => {
        const { token } = JSON.parse(data.toString());
        const claims = await verifier.verify(token);
        if (ws.readyState !== WebSocket.CLOSED) await once(ws, 'close'); // the client left meanwhile
        deadlines.track(ws, token, claims);
        tracked.push(ws);
      });
    }),
  );
  const port = await freePort();
  await new Promise((r) => app.listen(port, '127.0.0.1', r));
  cleanups.push(async () => {
    deadlines.stop();
    app.closeAllConnections();
    await new Promise((r) => app.close(r));
  });
  const token = await server.token(client, { sub: 'user-1' });
  const ws = new WebSocket(`ws://127.0.0.1:${port}/sync`);
  await once(ws, 'open');
  ws.send(JSON.stringify({ token }));
  ws.terminate();
  while (tracked.length === 0) await new Promise((r) => setTimeout(r, 10));
  assert.equal(deadlines.size, 0);
  assert.equal(deadlines.claims(tracked[0]), undefined);
});

test('told to refresh before exp; a fresh token on the open connection moves the deadline', { timeout: 20_000 }, async () => {
  const { url } = await syncServer(createVerifier({ issuer: server.issuer, audience: AUDIENCE }), { refreshBefore: 2, recheckInterval: 0 });
  const first = await server.token(client, { sub: 'user-1', expires_in: '3' });
  const { exp } = decodeJwt(first);
  const conn = await connect(url, first);
  const expiring = await conn.next('token-expiring');
  assert.deepEqual(expiring, { type: 'token-expiring', expiresAt: exp });
  assert.ok(Date.now() / 1000 >= exp - 2 - 0.5, 'not told too early');

  // A token for another user is refused, and so is garbage; the connection stays.
  conn.send({ type: 'token-refresh', token: await server.token(client, { sub: 'user-2', expires_in: '60' }) });
  assert.deepEqual(await conn.next('token-rejected'), { type: 'token-rejected', reason: 'wrong_subject' });
  conn.send({ type: 'token-refresh', token: 'garbage' });
  assert.deepEqual(await conn.next('token-rejected'), { type: 'token-rejected', reason: 'malformed' });

  const fresh = await server.token(client, { sub: 'user-1', expires_in: '60' });
  conn.send({ type: 'token-refresh', token: fresh });
  assert.deepEqual(await conn.next('token-accepted'), { type: 'token-accepted', expiresAt: decodeJwt(fresh).exp });

  // Past the first token's exp, the connection is still open and serving.
  await new Promise((r) => setTimeout(r, Math.max(0, exp * 1000 - Date.now()) + 700));
  assert.equal(conn.ws.readyState, WebSocket.OPEN);
  conn.send({ type: 'echo' });
  assert.deepEqual(await conn.next('echo'), { type: 'echo', sub: 'user-1' });
  conn.ws.close();
});

test('a connection whose token expires without a refresh is closed with 4001 "expired" at exp', { timeout: 20_000 }, async () => {
  const { url, deadlines } = await syncServer(createVerifier({ issuer: server.issuer, audience: AUDIENCE }), { refreshBefore: 1, recheckInterval: 0 });
  const token = await server.token(client, { sub: 'user-1', expires_in: '2' });
  const { exp } = decodeJwt(token);
  const conn = await connect(url, token);
  await conn.next('token-expiring');
  const closed = await conn.closed;
  assert.equal(closed.code, TOKEN_CLOSE_CODE);
  assert.equal(closed.code, 4001);
  assert.equal(closed.reason, 'expired');
  assert.ok(closed.at >= exp * 1000 - 50, `closed ${exp * 1000 - closed.at} ms before exp`);
  assert.ok(closed.at <= exp * 1000 + 1500, `closed ${closed.at - exp * 1000} ms after exp`);
  assert.equal(deadlines.size, 0);
});

test('a token that expires beyond setTimeout\'s 24.8-day range keeps its connection open', { timeout: 20_000 }, async () => {
  // The helper's clock says "30 days before now": the token's exp lies 30 days and an hour
  // ahead, past the 2^31 - 1 ms a single setTimeout can wait (Node would fire it at once).
  const days30 = 30 * 24 * 3600 * 1000;
  const { url, deadlines } = await syncServer(createVerifier({ issuer: server.issuer, audience: AUDIENCE }), {
    refreshBefore: 60,
    recheckInterval: 0,
    clock: () => Date.now() - days30,
  });
  const token = await server.token(client, { sub: 'user-1' });
  const conn = await connect(url, token);
  const outcome = await Promise.race([conn.closed, new Promise((r) => setTimeout(() => r('open'), 1500))]);
  assert.equal(outcome, 'open');
  assert.deepEqual(conn.messages, []);
  assert.equal(deadlines.size, 1);
  conn.ws.close();
});

test('a revoked token closes its open connection at the next re-check (4001 "revoked")', { timeout: 20_000 }, async () => {
  const statuses = [0, 0];
  issuer.state.lists.set('ws', { statuses, ttl: 1 });
  const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE });
  const { url } = await syncServer(verifier, { recheckInterval: 0.3 });
  const keep = await connect(url, await issuer.token({ list: 'ws', idx: 0, sub: 'user-keep' }));
  const doomed = await connect(url, await issuer.token({ list: 'ws', idx: 1 }));
  await new Promise((r) => setTimeout(r, 600));
  assert.equal(doomed.ws.readyState, WebSocket.OPEN);
  const revokedAt = Date.now();
  statuses[1] = 1;
  const closed = await doomed.closed;
  assert.equal(closed.code, 4001);
  assert.equal(closed.reason, 'revoked');
  // Within the list's ttl (1 s) plus one re-check interval.
  assert.ok(closed.at - revokedAt < 1000 + 300 + 700, `closed ${closed.at - revokedAt} ms after revocation`);
  assert.equal(keep.ws.readyState, WebSocket.OPEN);
  keep.ws.close();
});

test('an onClose that throws does not keep a revoked connection open, nor the others of the pass', { timeout: 20_000 }, async () => {
  const statuses = [0, 0];
  issuer.state.lists.set('ws-onclose', { statuses, ttl: 1 });
  const verifier = createVerifier({ issuer: issuer.issuer, audience: AUDIENCE });
  const seen = [];
  const { url, deadlines } = await syncServer(verifier, {
    recheckInterval: 0,
    onClose: (ws, reason, claims) => {
      seen.push(claims.sub);
      throw new Error('a bug in the application');
    },
  });
  const first = await connect(url, await issuer.token({ list: 'ws-onclose', idx: 0, sub: 'user-a' }));
  const second = await connect(url, await issuer.token({ list: 'ws-onclose', idx: 1, sub: 'user-b' }));
  statuses[0] = 1;
  statuses[1] = 1;
  await new Promise((r) => setTimeout(r, 1100)); // past the list's ttl
  await assert.rejects(deadlines.recheck(), /a bug in the application/);
  assert.deepEqual(seen.sort(), ['user-a', 'user-b']);
  for (const conn of [first, second]) {
    const closed = await conn.closed;
    assert.deepEqual([closed.code, closed.reason], [4001, 'revoked']);
  }
  assert.equal(deadlines.size, 0);
});

test('a token that lives less than refreshBefore is told to refresh halfway, not at once', async () => {
  // Told at once, a client refreshing at once got another such token and was told again:
  // a loop of token requests (18 cycles in 3 s with 5 s tokens).
  const sent = [];
  const socket = { readyState: 1, send: (m) => sent.push(JSON.parse(m)), on() {}, off() {}, close() {} };
  const deadlines = createTokenDeadlines({ verify: async () => ({}) }, { refreshBefore: 60, handleMessages: false });
  const exp = Math.floor(Date.now() / 1000) + 4;
  deadlines.track(socket, 'token', { sub: 'short-lived', exp });
  try {
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(sent, []);
    const deadline = Date.now() + 4000;
    while (sent.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(sent, [{ type: 'token-expiring', expiresAt: exp }]);
    assert.ok(Date.now() < exp * 1000, 'told before the token expired');
  } finally {
    deadlines.stop();
  }
});

test('a token that lives longer than refreshBefore is told exactly refreshBefore seconds before exp', (t) => {
  // With 9.5 s left and refreshBefore 6, the notice is due 3.5 s after the upgrade; the
  // halfway rule is for tokens that arrive inside the window (it said 4.75 s here).
  t.mock.timers.enable({ apis: ['setTimeout'] });
  let nowMs = 1_800_000_000_000;
  const advance = (ms) => {
    nowMs += ms;
    t.mock.timers.tick(ms);
  };
  const sent = [];
  const socket = { readyState: 1, send: (m) => sent.push(JSON.parse(m)), on() {}, off() {}, close() {} };
  const deadlines = createTokenDeadlines(
    { verify: async () => ({}) },
    { refreshBefore: 6, handleMessages: false, recheckInterval: 0, clock: () => nowMs },
  );
  const exp = nowMs / 1000 + 9.5;
  deadlines.track(socket, 'token', { sub: 'long-lived', exp });
  try {
    advance(3400);
    assert.deepEqual(sent, []);
    advance(200);
    assert.deepEqual(sent, [{ type: 'token-expiring', expiresAt: exp }]);
  } finally {
    deadlines.stop();
  }
});
