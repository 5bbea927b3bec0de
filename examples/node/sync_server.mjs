// Example: a Node sync server that accepts only valid authserver access tokens.
//
// Verification with `jose` (https://github.com/panva/jose) against authserver's remote JWK
// set: createRemoteJWKSet caches the set and refetches it when a token names an unknown
// `kid` (at most once per cooldown), which is what makes key rotation seamless.
//
// Configuration (environment):
//   SYNC_ISSUER    authserver's AUTHSERVER_ISSUER, e.g. https://auth.example.com
//   SYNC_AUDIENCE  this server's audience, e.g. https://sync.example.com
//   PORT           where to listen (default 8081)
//
// Run: npm ci && node sync_server.mjs. Each accepted request prints one line
// `verified claims: {...}` on stdout.

import http from 'node:http';
import { createRemoteJWKSet, jwtVerify, errors } from 'jose';

const issuer = process.env.SYNC_ISSUER;
const audience = process.env.SYNC_AUDIENCE;
const port = Number(process.env.PORT || 8081);
if (!issuer || !audience) {
  console.error('SYNC_ISSUER and SYNC_AUDIENCE are required');
  process.exit(2);
}

// RFC 8414: take jwks_uri from the metadata, and check the metadata is the issuer's own.
async function discoverJwksUri() {
  const response = await fetch(`${issuer}/.well-known/oauth-authorization-server`, {
    signal: AbortSignal.timeout(5000),
  });
  if (!response.ok) throw new Error(`metadata: HTTP ${response.status}`);
  const metadata = await response.json();
  if (metadata.issuer !== issuer) throw new Error(`metadata is for ${metadata.issuer}`);
  return new URL(metadata.jwks_uri);
}

const JWKS = createRemoteJWKSet(await discoverJwksUri(), {
  cacheMaxAge: 5 * 60 * 1000, // keep <= AUTHSERVER_KEY_PUBLISH_AHEAD (1 h by default)
  cooldownDuration: 10 * 1000, // an unknown kid refetches at most once per 10 s
  timeoutDuration: 5000,
});

const VERIFY_OPTIONS = {
  issuer, // iss must be exactly AUTHSERVER_ISSUER
  audience, // aud must contain ours
  algorithms: ['RS256'], // pinned: never trust the token's alg
  typ: 'at+jwt', // RFC 9068 §4 (jose also accepts application/at+jwt)
  clockTolerance: 30, // seconds of leeway for exp / nbf / iat
  requiredClaims: ['iss', 'exp', 'aud', 'sub', 'client_id', 'iat', 'jti'], // RFC 9068 §2.2
};

function send(res, status, body, headers = {}) {
  res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

const server = http.createServer(async (req, res) => {
  if (req.url === '/healthz') return send(res, 200, { ok: true });
  const match = /^Bearer +([^ ]+) *$/i.exec(req.headers.authorization || '');
  if (!match) {
    // RFC 6750 §3.1: no error code when the request carried no token.
    return send(res, 401, { error: 'invalid_token', reason: 'missing_token' }, {
      'WWW-Authenticate': 'Bearer',
    });
  }
  let payload;
  try {
    ({ payload } = await jwtVerify(match[1], JWKS, VERIFY_OPTIONS));
  } catch (err) {
    // Keys that could not be fetched (network, timeout, HTTP error) are not the token's fault.
    const unavailable =
      !(err instanceof errors.JOSEError) ||
      err instanceof errors.JWKSTimeout ||
      err.code === 'ERR_JOSE_GENERIC';
    if (unavailable) {
      console.error('cannot verify: ' + err);
      return send(res, 503, { error: 'temporarily_unavailable' }, { 'Retry-After': '5' });
    }
    const reason = err?.code || 'invalid_token';
    return send(res, 401, { error: 'invalid_token', reason }, {
      'WWW-Authenticate': `Bearer error="invalid_token", error_description="${reason}"`,
    });
  }
  console.log('verified claims: ' + JSON.stringify(Object.fromEntries(Object.entries(payload).sort())));
  send(res, 200, { ok: true, user: payload.sub, claims: payload });
});

server.listen(port, '127.0.0.1', () => {
  console.log(`sync server on http://127.0.0.1:${port}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
