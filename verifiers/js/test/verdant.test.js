// The Verdant adapter against the real @verdant-web/server from npm, with tokens from a
// real authserver (claims as Verdant's TokenProvider names them: sub, lib, url, type).

import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { after, before, test } from 'node:test';
import { WebSocket } from 'ws';
import { Server, TokenProvider } from '@verdant-web/server';

import { createVerifier } from '../src/index.js';
import { useAuthserverTokens } from '../src/verdant.js';
import { freePort, sharedAuthserver, slowVerifier } from './helpers/authserver.js';

const AUDIENCE = 'https://sync.example.com';
const SECRET = 'the-shared-secret-verdant-would-use';
let server;
let client;
let verdant;
let app;
let base;
let dir;
const events = [];

before(async () => {
  server = await sharedAuthserver();
  client = server.client;
  dir = mkdtempSync(path.join(tmpdir(), 'verdant-'));
  app = http.createServer();
  // The way Verdant's docs attach it to an existing server; the secret is no longer used.
  verdant = new Server({ httpServer: app, tokenSecret: SECRET, databaseFile: path.join(dir, 'verdant.sqlite') });
  useAuthserverTokens(verdant, createVerifier({ issuer: server.issuer, audience: AUDIENCE }));
  verdant.on('socket-connection', (info) => events.push(info));
  verdant.on('error', () => {}); // refused tokens are reported here too
  app.on('request', (req, res) => (req.url.startsWith('/sync') ? verdant.handleRequest(req, res) : res.writeHead(404).end()));
  const port = await freePort();
  await new Promise((r) => app.listen(port, '127.0.0.1', r));
  base = `127.0.0.1:${port}`;
});
after(async () => {
  app?.closeAllConnections();
  await new Promise((r) => (app ? app.close(r) : r()));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const verdantToken = (claims, params = {}) =>
  server.token(client, { sub: 'user-1', audience: AUDIENCE, claims: JSON.stringify({ lib: 'lib-1', url: `ws://${base}/sync`, type: 0, ...claims }), ...params });

async function push(token, messages) {
  const response = await fetch(`http://${base}/sync`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ messages }),
  });
  // Verdant writes its error body as a JSON string of JSON ({"code":...}): read both layers.
  const body = await response.json();
  return { status: response.status, body: typeof body === 'string' ? JSON.parse(body) : body };
}

test('HTTP sync: an authserver RS256 token is accepted and the library sees its claims', { timeout: 30_000 }, async () => {
  const token = await verdantToken({ lib: 'lib-http' });
  const { status, body } = await push(token, [{ type: 'heartbeat', replicaId: 'replica-1', timestamp: 'x' }]);
  assert.equal(status, 200);
  assert.deepEqual(body, { messages: [{ type: 'heartbeat-response' }] });
});

test('WebSocket sync: connection opens with userId/libraryId from sub/lib, and messages flow', { timeout: 30_000 }, async () => {
  const token = await verdantToken({ lib: 'lib-ws', role: 'editor' });
  // Verdant's client sends the token in the query string or as a subprotocol; both work.
  for (const open of [
    () => new WebSocket(`ws://${base}/sync?token=${token}`),
    () => new WebSocket(`ws://${base}/sync`, ['Bearer', token]),
  ]) {
    const ws = open();
    await once(ws, 'open');
    ws.send(JSON.stringify({ type: 'heartbeat', replicaId: 'replica-ws', timestamp: 'x' }));
    const [data] = await once(ws, 'message');
    assert.deepEqual(JSON.parse(data.toString()), { type: 'heartbeat-response' });
    ws.close();
    await once(ws, 'close');
  }
  const info = events.at(-1);
  assert.equal(info.userId, 'user-1');
  assert.equal(info.libraryId, 'lib-ws');
  assert.equal(info.role, 'editor');
  assert.equal(info.type, 0);
  assert.equal(info.syncEndpoint, `ws://${base}/sync`);
});

test('a verdant-profile client: TokenProvider.getToken options in, {accessToken} out, accepted by Verdant', { timeout: 30_000 }, async () => {
  // The backend of docs/migrating.md: Verdant's getToken options sent to /token, the answer
  // forwarded to the browser; the sync URL is the client's fixed claim.
  const syncUrl = `ws://${base}/sync`;
  const backend = server.createClient(
    '--name', 'verdant backend', '--profile', 'verdant', '--audience', AUDIENCE,
    '--fixed-claim', `url=${syncUrl}`,
    ...['lib', 'role', 'type'].flatMap((claim) => ['--allowed-claim', claim]),
  );
  const response = await fetch(`${server.baseUrl}/token`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      authorization: 'Basic ' + Buffer.from(`${backend.client_id}:${backend.client_secret}`).toString('base64'),
    },
    body: JSON.stringify({ grant_type: 'client_credentials', userId: 'user-7', libraryId: 'lib-profile', role: 'viewer', type: 5, expiresIn: '10m' }),
  });
  assert.equal(response.status, 200, await response.clone().text());
  const answer = await response.json();
  assert.deepEqual(Object.keys(answer).sort(), ['accessToken', 'expiresIn', 'syncEndpoint']);
  assert.equal(answer.syncEndpoint, syncUrl);
  assert.equal(answer.expiresIn, 600);

  const { status, body } = await push(answer.accessToken, [{ type: 'heartbeat', replicaId: 'replica-p', timestamp: 'x' }]);
  assert.equal(status, 200);
  assert.deepEqual(body, { messages: [{ type: 'heartbeat-response' }] });
  const ws = new WebSocket(syncUrl, ['Bearer', answer.accessToken]);
  await once(ws, 'open');
  ws.close();
  await once(ws, 'close');
  const info = events.at(-1);
  assert.equal(info.userId, 'user-7');
  assert.equal(info.libraryId, 'lib-profile');
  assert.equal(info.role, 'viewer');
  assert.equal(info.type, 5); // ReplicaType.ReadOnlyRealtime, as asked
  assert.equal(info.syncEndpoint, syncUrl);
});

test('refused: a token made with the old shared HS256 secret, a garbage token, a token without the lib claim', { timeout: 30_000 }, async () => {
  const hs256 = new TokenProvider({ secret: SECRET }).getToken({ userId: 'user-1', libraryId: 'lib-1', syncEndpoint: 'x' });
  const noLib = await server.token(client, { sub: 'user-1', audience: AUDIENCE });
  for (const token of [hs256, 'garbage', noLib]) {
    const { status, body } = await push(token, [{ type: 'heartbeat', replicaId: 'r', timestamp: 'x' }]);
    assert.equal(status, 401, token.slice(0, 20));
    assert.deepEqual(body, { code: 4011 }); // VerdantError InvalidToken

    const ws = new WebSocket(`ws://${base}/sync?token=${token}`);
    ws.on('error', () => {});
    const [, response] = await once(ws, 'unexpected-response');
    assert.equal(response.statusCode, 401);
    ws.terminate();
  }
});

test('an expired token is Verdant\'s TokenExpired (4012), so its client refreshes', { timeout: 30_000 }, async () => {
  const token = await verdantToken({}, { expires_in: '1' });
  const verifier = createVerifier({ issuer: server.issuer, audience: AUDIENCE, clock: () => Date.now() + 120_000 });
  // A second server with a clock two minutes ahead sees it expired.
  const http2 = http.createServer();
  const other = new Server({ httpServer: http2, tokenSecret: SECRET, databaseFile: path.join(dir, 'verdant2.sqlite') });
  other.on('error', () => {});
  useAuthserverTokens(other, verifier);
  http2.on('request', (req, res) => other.handleRequest(req, res));
  const port = await freePort();
  await new Promise((r) => http2.listen(port, '127.0.0.1', r));
  try {
    const response = await fetch(`http://127.0.0.1:${port}/sync`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ messages: [] }),
    });
    assert.equal(response.status, 401);
    assert.deepEqual(JSON.parse(await response.json()), { code: 4012 });
  } finally {
    http2.closeAllConnections();
    http2.close();
  }
});

test('a client that resets its upgrade while the adapter verifies its token does not crash the server', { timeout: 30_000 }, async () => {
  // Verdant's handleUpgrade never waits; the adapter's verification does, on a socket Node's
  // http server no longer listens to for errors: a reset meanwhile was an uncaught ECONNRESET.
  const slow = slowVerifier(createVerifier({ issuer: server.issuer, audience: AUDIENCE }));
  const http2 = http.createServer();
  const other = new Server({ httpServer: http2, tokenSecret: SECRET, databaseFile: path.join(dir, 'verdant-reset.sqlite') });
  other.on('error', () => {});
  useAuthserverTokens(other, slow);
  const port = await freePort();
  await new Promise((r) => http2.listen(port, '127.0.0.1', r));
  try {
    const token = await verdantToken({ lib: 'lib-reset' });
    for (const [i, good] of [[0, true], [1, false]]) {
      const raw = net.connect(port, '127.0.0.1');
      await once(raw, 'connect');
      raw.write(
        `GET /sync?token=${good ? token : 'garbage'} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
      );
      while (slow.calls <= i) await new Promise((r) => setTimeout(r, 5));
      raw.resetAndDestroy();
    }
    await new Promise((r) => setTimeout(r, 300));
    // Alive, and serving the next client.
    const ws = new WebSocket(`ws://127.0.0.1:${port}/sync?token=${token}`);
    await once(ws, 'open');
    ws.close();
  } finally {
    http2.closeAllConnections();
    http2.close();
  }
});
