// Example: a Node sync server that accepts only valid authserver access tokens, with the
// authserver-verifier package (verifiers/js): keys discovered from the issuer and cached,
// RS256 and at+jwt pinned, revoked tokens refused through the token status list.
//
// Configuration (environment):
//   SYNC_ISSUER    authserver's AUTHSERVER_ISSUER, e.g. https://auth.example.com
//   SYNC_AUDIENCE  this server's audience, e.g. https://sync.example.com
//   PORT           where to listen (default 8081)
//
// Run: npm ci && node sync_server.mjs. Each accepted request prints one line
// `verified claims: {...}` on stdout. It starts whether or not authserver is up: until the
// issuer's keys can be fetched it says so once per retry on stderr and answers 503.

import http from 'node:http';
import { createVerifier, requireToken } from 'authserver-verifier';

const issuer = process.env.SYNC_ISSUER;
const audience = process.env.SYNC_AUDIENCE;
const port = Number(process.env.PORT || 8081);
if (!issuer || !audience) {
  console.error('SYNC_ISSUER and SYNC_AUDIENCE are required');
  process.exit(2);
}

// One verifier per process: it holds the key and status-list caches. Defaults: JWKS cached
// 5 min, an unknown kid refetches at most every 10 s, 30 s leeway, status lists honoured.
const verifier = createVerifier({ issuer, audience });

const app = http.createServer(
  requireToken(
    verifier,
    (req, res) => {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      if (req.url === '/healthz') return res.end('{"ok":true}');
      const sorted = Object.fromEntries(Object.entries(req.auth).sort());
      console.log('verified claims: ' + JSON.stringify(sorted));
      res.end(JSON.stringify({ ok: true, user: req.auth.sub, claims: req.auth }));
    },
    { publicPaths: ['/healthz'] }, // everything else needs a valid token (401/503 otherwise)
  ),
);

app.listen(port, '127.0.0.1', () => {
  console.log(`sync server on http://127.0.0.1:${port}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}

// Load the issuer's keys now rather than on the first request, retrying while authserver is
// not up yet (a clear line, no stack trace); requests meanwhile get 503 + Retry-After.
for (let attempt = 1; ; attempt += 1) {
  try {
    await verifier.ready();
    console.log(`keys loaded from ${issuer}`);
    break;
  } catch (err) {
    console.error(`authserver at ${issuer} is not reachable yet (${err.message}); retrying in 2 s`);
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}
