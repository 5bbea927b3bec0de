// Revocation through a real `authserver serve`: its tokens carry a status claim, its lists
// are served at the uri, and a revoked token is refused within one list ttl (issue 15 item
// 4). The verifier's clock is stepped past the ttl instead of sleeping for it.

import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { decodeJwt, decodeProtectedHeader } from 'jose';

import { createVerifier, InvalidTokenError } from '../src/index.js';
import { sharedAuthserver } from './helpers/authserver.js';

const AUDIENCE = 'https://sync.example.com';
let server;
let client;

before(async () => {
  server = await sharedAuthserver();
  client = server.client;
});

const issue = (sub) => server.token(client, { sub, audience: AUDIENCE });

async function revoke(token) {
  const response = await fetch(`${server.issuer}/revoke`, {
    method: 'POST',
    body: new URLSearchParams({ token, token_type_hint: 'access_token' }),
    headers: { authorization: 'Basic ' + Buffer.from(`${client.client_id}:${client.client_secret}`).toString('base64') },
  });
  assert.equal(response.status, 200, await response.text());
}

async function refused(verifier, token, reason) {
  const err = await verifier.verify(token).catch((e) => e);
  assert.ok(err instanceof InvalidTokenError, `accepted: ${JSON.stringify(decodeJwt(token).status)}`);
  assert.equal(err.reason, reason, err.message);
}

test('the server\'s tokens and status lists are what the draft says', async () => {
  const token = await issue('user-shape');
  const { status } = decodeJwt(token);
  assert.ok(Number.isSafeInteger(status.status_list.idx) && status.status_list.idx >= 0);
  assert.ok(status.status_list.uri.startsWith(server.issuer + '/'), status.status_list.uri);
  const response = await fetch(status.status_list.uri, { headers: { accept: 'application/statuslist+jwt' } });
  assert.equal(response.status, 200);
  assert.equal(response.headers.get('content-type').split(';')[0], 'application/statuslist+jwt');
  const list = (await response.text()).trim();
  assert.equal(decodeProtectedHeader(list).typ, 'statuslist+jwt');
  const claims = decodeJwt(list);
  assert.equal(claims.sub, status.status_list.uri);
  assert.ok(claims.ttl > 0 && claims.exp > claims.iat);
  assert.ok([1, 2, 4, 8].includes(claims.status_list.bits));
});

test('POST /revoke and `authserver tokens revoke --sub`: refused within one ttl, other tokens unaffected', { timeout: 60_000 }, async () => {
  const clock = () => Date.now() + clock.offset * 1000;
  clock.offset = 0;
  const verifier = createVerifier({ issuer: server.issuer, audience: AUDIENCE, clock });

  const byRevoke = await issue('user-revoke');
  const bySub = await issue('user-withdrawn');
  const bySubToo = await issue('user-withdrawn');
  const bystander = await issue('user-bystander');
  for (const token of [byRevoke, bySub, bySubToo, bystander]) await verifier.verify(token); // lists cached now
  const fetchedAt = Date.now();
  /** Step the verifier's clock to `seconds` after the lists were fetched. */
  const stepTo = (seconds) => (clock.offset = (fetchedAt + seconds * 1000 - Date.now()) / 1000);

  const { ttl } = decodeJwt((await (await fetch(decodeJwt(byRevoke).status.status_list.uri)).text()).trim());
  await revoke(byRevoke);
  server.cli('tokens', 'revoke', '--sub', 'user-withdrawn');

  // A verifier that has no copy yet sees it at once.
  const fresh = createVerifier({ issuer: server.issuer, audience: AUDIENCE });
  await refused(fresh, byRevoke, 'revoked');
  await refused(fresh, bySub, 'revoked');
  await refused(fresh, bySubToo, 'revoked');
  assert.equal((await fresh.verify(bystander)).sub, 'user-bystander');

  // The one holding a list fetched before the revocation may accept until that copy's ttl ends...
  stepTo(ttl - 2);
  assert.equal((await verifier.verify(byRevoke)).sub, 'user-revoke');
  // ...and not after.
  stepTo(ttl + 1);
  await refused(verifier, byRevoke, 'revoked');
  await refused(verifier, bySub, 'revoked');
  await refused(verifier, bySubToo, 'revoked');
  assert.equal((await verifier.verify(bystander)).sub, 'user-bystander');
  assert.equal((await verifier.verify(await issue('user-withdrawn'))).sub, 'user-withdrawn', 'a token issued after the revocation is valid');
});
