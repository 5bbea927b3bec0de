// An issuer signed with jose in the test process, for status-list cases the real server
// cannot be made to produce (a list with a wrong sub, an expired list, 2-bit lists, an
// unreachable list). Its Status List Tokens follow draft-ietf-oauth-status-list §4 and §5.1
// exactly: typ statuslist+jwt, sub = the list's URI, iat, exp, ttl, {bits, lst} with lst
// the base64url of the ZLIB-compressed byte array, statuses packed from the least
// significant bit.

import { createHash } from 'node:crypto';
import http from 'node:http';
import { deflateSync } from 'node:zlib';
import { base64url, calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT } from 'jose';

import { freePort } from './authserver.js';

export async function newKey() {
  const { publicKey, privateKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(jwk);
  return { privateKey, kid, jwk: { ...jwk, kid, use: 'sig', alg: 'RS256' } };
}

/** §4.1: pack `statuses` (numbers) `bits` per entry, least significant bits first. */
export function encodeList(statuses, bits, size = statuses.length) {
  const bytes = new Uint8Array(Math.ceil((size * bits) / 8));
  statuses.forEach((value, idx) => {
    const perByte = 8 / bits;
    bytes[Math.floor(idx / perByte)] |= value << ((idx % perByte) * bits);
  });
  return { bits, lst: base64url.encode(deflateSync(bytes, { level: 9 })) };
}

function etagOf(body) {
  return `"${createHash('sha256').update(body).digest('hex').slice(0, 32)}"`;
}

export async function startIssuer() {
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}`;
  const key = await newKey();
  const state = {
    keys: [key],
    // Per list id: {statuses, bits, size, ttl, expIn, sub?, typ?, signWith?, status?, iss?}
    lists: new Map(),
    fetches: 0,
    listRequests: 0, // every request for a list, answered or not
    notModified: 0, // conditional list requests answered 304
    jwksFetches: 0,
    jwksNotModified: 0,
    down: false,
  };
  // Each list is signed again only when its settings change (or a minute has passed), so
  // that its ETag, the hash of the token, stays the same while the list does.
  const signed = new Map();

  async function currentListToken(id, list) {
    const version = JSON.stringify({ ...list, signWith: list.signWith?.kid, minute: Math.floor(Date.now() / 60000) });
    const held = signed.get(id);
    if (held?.version === version) return held;
    const body = await statusListToken(id, list);
    const entry = { version, body, etag: etagOf(body) };
    signed.set(id, entry);
    return entry;
  }

  async function statusListToken(id, list) {
    const now = Math.floor(Date.now() / 1000);
    const claims = {
      sub: list.sub ?? `${issuer}/statuslists/${id}`,
      iat: now,
      status_list: encodeList(list.statuses, list.bits ?? 1, list.size ?? 1024),
    };
    if (list.expIn !== null) claims.exp = now + (list.expIn ?? 900);
    if (list.ttl !== null) claims.ttl = list.ttl ?? 60;
    if (list.iss) claims.iss = list.iss;
    const signer = list.signWith ?? key;
    return new SignJWT(claims)
      .setProtectedHeader({ alg: 'RS256', typ: list.typ ?? 'statuslist+jwt', kid: signer.kid })
      .sign(signer.privateKey);
  }

  const server = http.createServer(async (req, res) => {
    if (req.url.startsWith('/statuslists/')) state.listRequests += 1;
    if (state.hang && (req.url.startsWith('/statuslists/') || req.url === '/jwks')) {
      // An issuer that accepts connections and does not answer in time.
      await new Promise((resolve) => setTimeout(resolve, state.hang));
    }
    if (state.reset && req.url.startsWith('/statuslists/')) {
      // The connection dropped without an answer (a proxy restarting, a crashed worker).
      req.socket.destroy();
      return;
    }
    if (state.down && req.url.startsWith('/statuslists/')) {
      res.writeHead(503).end();
      return;
    }
    if (req.url === '/.well-known/oauth-authorization-server') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ issuer, jwks_uri: `${issuer}/jwks` }));
    } else if (req.url === '/jwks') {
      state.jwksFetches += 1;
      const body = JSON.stringify({ keys: state.keys.map((k) => k.jwk) });
      const etag = etagOf(body);
      if (req.headers['if-none-match'] === etag) {
        state.jwksNotModified += 1;
        res.writeHead(304, { etag }).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json', etag });
      res.end(body);
    } else if (req.url.startsWith('/statuslists/') && state.lists.has(req.url.slice('/statuslists/'.length))) {
      const id = req.url.slice('/statuslists/'.length);
      state.fetches += 1;
      const { body, etag } = await currentListToken(id, state.lists.get(id));
      if (req.headers['if-none-match'] === etag) {
        state.notModified += 1;
        res.writeHead(304, { etag }).end();
        return;
      }
      const contentType = state.lists.get(id).contentType ?? 'application/statuslist+jwt';
      res.writeHead(200, { 'content-type': contentType, etag });
      res.end(body);
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));

  return {
    issuer,
    key,
    state,
    listUri: (id) => `${issuer}/statuslists/${id}`,
    /** An access token as authserver signs it, with a status reference unless `status` is null. */
    async token({ list = '1', idx = 0, status, header = {}, signWith = key, ...claims } = {}) {
      const now = Math.floor(Date.now() / 1000);
      const body = {
        iss: issuer,
        sub: 'user-1',
        aud: 'https://sync.example.com',
        client_id: 'backend',
        jti: `jti-${Math.random()}`,
        iat: now,
        nbf: now,
        exp: now + 300,
        ...claims,
      };
      if (status !== null) body.status = status ?? { status_list: { idx, uri: `${issuer}/statuslists/${list}` } };
      return new SignJWT(body)
        .setProtectedHeader({ alg: 'RS256', typ: 'at+jwt', kid: signWith.kid, ...header })
        .sign(signWith.privateKey);
    },
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(resolve);
      }),
  };
}
