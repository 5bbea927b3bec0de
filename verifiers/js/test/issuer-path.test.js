// An issuer with a path (AUTHSERVER_ISSUER=http://host:port/auth): the verifier finds the
// metadata at the RFC 8414 §3.1 location (/.well-known/oauth-authorization-server/auth),
// and, behind a reverse proxy that routes only the issuer's path to the server, at the
// issuer with the well-known path appended.

import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, test } from 'node:test';

import { createVerifier } from '../src/index.js';
import { DEFAULT_AUDIENCE, freePort, startAuthserver } from './helpers/authserver.js';

const servers = [];
let proxy;

after(async () => {
  if (proxy) await new Promise((resolve) => proxy.close(resolve));
  for (const server of servers) await server.close();
});

test('an issuer with a path: its tokens verify, the metadata found at the RFC 8414 location', async () => {
  const server = await startAuthserver({ issuerPath: '/auth' });
  servers.push(server);
  assert.equal(server.issuer, `${server.baseUrl}/auth`);
  const client = server.createClient('--name', 'path issuer', '--audience', DEFAULT_AUDIENCE);
  const rfc = await fetch(`${server.baseUrl}/.well-known/oauth-authorization-server/auth`);
  assert.equal(rfc.status, 200);
  assert.equal((await rfc.json()).issuer, server.issuer);
  const token = await server.token(client, { sub: 'path-user' });
  const verifier = createVerifier({ issuer: server.issuer, audience: DEFAULT_AUDIENCE });
  assert.equal((await verifier.verify(token)).sub, 'path-user');
});

test('behind a proxy that routes only the issuer\'s path, the appended location is used', async () => {
  // The proxy forwards /auth/... unchanged to the server, and answers 404 to the rest.
  const seen = [];
  let upstream;
  proxy = http.createServer((req, res) => {
    seen.push([req.url, req.url.startsWith('/auth/')]);
    if (!req.url.startsWith('/auth/')) return res.writeHead(404).end();
    const forward = http.request(
      { host: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode, answer.headers);
        answer.pipe(res);
      },
    );
    req.pipe(forward);
  });
  const port = await freePort();
  await new Promise((resolve) => proxy.listen(port, '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${port}/auth`;
  const server = await startAuthserver({ settings: { AUTHSERVER_ISSUER: issuer } });
  servers.push(server);
  upstream = new URL(server.baseUrl);
  const client = server.createClient('--name', 'proxied', '--audience', DEFAULT_AUDIENCE);

  const token = await server.token(client, { sub: 'proxied-user' });
  const verifier = createVerifier({ issuer, audience: DEFAULT_AUDIENCE });
  assert.equal((await verifier.verify(token)).sub, 'proxied-user');
  // The RFC location first (refused by the proxy), then the appended one, the keys and
  // the token's status list, all through the proxy.
  assert.deepEqual(seen.slice(0, 2), [
    ['/.well-known/oauth-authorization-server/auth', false],
    ['/auth/.well-known/oauth-authorization-server', true],
  ]);
  assert.ok(seen.some(([url]) => url === '/auth/.well-known/jwks.json'), JSON.stringify(seen));
  assert.ok(seen.some(([url]) => url.startsWith('/auth/statuslists/')), JSON.stringify(seen));
});
