// The vendors' own client code, fed authserver's answers (issue 16).
//
// tests/e2e/test_profiles_live.py starts a real `authserver serve`, registers one client
// per profile and runs this file with AUTHSERVER_URL, AUDIENCE and PROFILE_CLIENTS (JSON:
// profile name -> {client_id, client_secret}). Each test sends exactly the request a
// backend written for that vendor sends, hands the answer to the vendor's client code the
// way that backend would, and checks what the vendor code made of it. Each also has a
// control: the RFC 6749 answer of an oauth2 client fed to the same vendor code is refused,
// so a check that could not fail would show.
import 'fake-indexeddb/auto';
import assert from 'node:assert/strict';
import { after, test } from 'node:test';

import Dexie from 'dexie';
import dexieCloud from 'dexie-cloud-addon';
import { createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose';
import twilio from 'twilio';
// Not in the package's exports map: the module that parses a Verdant auth endpoint's
// answer (its logic is the same in @verdant-web/store 3.6 and 5.5).
import { ServerSyncEndpointProvider } from '../node_modules/@verdant-web/store/dist/esm/sync/ServerSyncEndpointProvider.js';

const URL_ = process.env.AUTHSERVER_URL;
const AUDIENCE = process.env.AUDIENCE;
const CLIENTS = JSON.parse(process.env.PROFILE_CLIENTS ?? '{}');
const JWKS = createRemoteJWKSet(new URL(`${URL_}/.well-known/jwks.json`));
const DATABASES = [];

// dexie-cloud-addon keeps timers and a pending login() alive after the checks (it waits
// for a browser's live query); end the process once every test has reported.
after(async () => {
  for (const db of DATABASES) db.close();
  setTimeout(() => process.exit(), 200);
});

function basic(name) {
  const { client_id, client_secret } = CLIENTS[name];
  return 'Basic ' + Buffer.from(`${client_id}:${client_secret}`).toString('base64');
}

async function postJson(path, body, authorization) {
  const headers = { 'Content-Type': 'application/json', Accept: 'application/json' };
  if (authorization) headers.Authorization = authorization;
  return fetch(`${URL_}${path}`, { method: 'POST', headers, body: JSON.stringify(body) });
}

async function verify(token) {
  const { payload, protectedHeader } = await jwtVerify(token, JWKS, {
    issuer: URL_,
    audience: AUDIENCE,
    algorithms: ['RS256'],
    typ: 'at+jwt',
  });
  return { payload, protectedHeader };
}

/** An oauth2 client's RFC 6749 answer: what a vendor client must not mistake for its own. */
async function oauth2Answer() {
  const res = await postJson('/token', { grant_type: 'client_credentials', sub: 'u1' }, basic('oauth2'));
  assert.equal(res.status, 200);
  return res.json();
}

// -- Dexie Cloud -------------------------------------------------------------------------

/** Log in through dexie-cloud-addon with *fetchTokens*; resolves with the stored login
 * (or rejects with the addon's error). The addon's login() then waits for its live query
 * to see the new user, which needs a browser; the stored login is what it parsed. */
async function dexieLogin(name, fetchTokens) {
  const db = new Dexie(name, { addons: [dexieCloud] });
  db.version(1).stores({ items: '@id' });
  db.cloud.configure({
    databaseUrl: 'http://127.0.0.1:9', // never contacted before the login is stored
    requireAuth: false,
    customLoginGui: true,
    tryUseServiceWorker: false,
    disableWebSocket: true,
    fetchTokens,
  });
  DATABASES.push(db);
  await db.open();
  const failed = db.cloud.login({ userId: 'u1' }).then(
    () => null,
    (error) => error,
  );
  const deadline = Date.now() + 15000;
  while (Date.now() < deadline) {
    const error = await Promise.race([failed, new Promise((r) => setTimeout(() => r(undefined), 50))]);
    if (error) throw error;
    const logins = await db.table('$logins').toArray();
    const login = logins.find((l) => l.isLoggedIn);
    if (login) return login;
  }
  throw new Error('dexie-cloud-addon stored no login in time');
}

test('dexie: the addon logs in with the answer its fetchTokens forwards', async () => {
  let answer;
  // The documented custom-authentication backend: JSON to `${DB_URL}/token`, answer forwarded.
  const fetchTokens = async ({ public_key }) => {
    const res = await postJson('/token', {
      grant_type: 'client_credentials',
      scopes: ['ACCESS_DB'],
      public_key,
      client_id: CLIENTS.dexie.client_id,
      client_secret: CLIENTS.dexie.client_secret,
      claims: { sub: 'u1', email: 'u1@example.com', name: 'User One' },
    });
    assert.equal(res.status, 200, await res.clone().text());
    answer = await res.json();
    return answer;
  };
  const login = await dexieLogin('dexie-ok', fetchTokens);
  const { payload } = await verify(answer.accessToken);
  assert.equal(login.accessToken, answer.accessToken);
  assert.equal(login.userId, 'u1');
  assert.equal(login.email, 'u1@example.com');
  assert.equal(login.name, 'User One');
  assert.equal(login.accessTokenExpiration.getTime(), payload.exp * 1000);
  assert.deepEqual(login.license, { type: 'prod', status: 'ok' });
  assert.equal(payload.sub, 'u1');
  assert.equal(payload.scope, 'ACCESS_DB');
});

test('dexie control: an RFC 6749 answer is refused by the addon', async () => {
  const rfc6749 = await oauth2Answer();
  await assert.rejects(dexieLogin('dexie-control', async () => rfc6749), /Unexpected response type/);
});

// -- Verdant -----------------------------------------------------------------------------

test('verdant: ServerSyncEndpointProvider takes the endpoints and token from the answer', async () => {
  const provider = new ServerSyncEndpointProvider({
    fetchAuth: async () => {
      // getToken({userId, libraryId, role}) became this request; syncEndpoint is the
      // client's fixed claim `url`.
      const res = await postJson(
        '/token',
        { grant_type: 'client_credentials', userId: 'u1', libraryId: 'lib-1', role: 'owner' },
        basic('verdant'),
      );
      assert.equal(res.status, 200, await res.clone().text());
      return res.json();
    },
  });
  const endpoints = await provider.getEndpoints();
  const { payload } = await verify(endpoints.token);
  assert.equal(payload.url, process.env.VERDANT_SYNC_URL);
  assert.equal(endpoints.http, process.env.VERDANT_SYNC_URL);
  assert.equal(endpoints.websocket, process.env.VERDANT_SYNC_URL.replace(/^http/, 'ws'));
  assert.equal(endpoints.files, `${process.env.VERDANT_SYNC_URL}/files`);
  assert.equal(provider.type, 0); // ReplicaType.Realtime, TokenProvider's default
  assert.equal(payload.sub, 'u1');
  assert.equal(payload.lib, 'lib-1');
  assert.equal(payload.role, 'owner');
});

test('verdant control: an RFC 6749 answer is refused by the provider', async () => {
  const rfc6749 = await oauth2Answer();
  const provider = new ServerSyncEndpointProvider({ fetchAuth: async () => rfc6749 });
  await assert.rejects(provider.getEndpoints(), /No access token/);
});

// -- Twilio Sync -------------------------------------------------------------------------

test("twilio: the grants claim is the one twilio's own AccessToken writes", async () => {
  const serviceSid = 'IS00000000000000000000000000000000';
  const res = await postJson(
    '/token',
    {
      grant_type: 'client_credentials',
      identity: 'alice',
      ttl: 3600,
      grants: { data_sync: { service_sid: serviceSid } },
    },
    basic('twilio'),
  );
  assert.equal(res.status, 200, await res.clone().text());
  const answer = await res.json();
  assert.deepEqual(Object.keys(answer).sort(), ['identity', 'token', 'ttl']);
  const { payload } = await verify(answer.token);

  // What the backend's code did before: twilio's AccessToken with a SyncGrant.
  const { AccessToken } = twilio.jwt;
  const reference = new AccessToken('AC' + '0'.repeat(32), 'SK' + '0'.repeat(32), 'x'.repeat(32), {
    identity: 'alice',
    ttl: 3600,
  });
  reference.addGrant(new AccessToken.SyncGrant({ serviceSid }));
  const theirs = decodeJwt(reference.toJwt());

  assert.deepEqual(payload.grants, theirs.grants);
  assert.equal(payload.exp - payload.iat, theirs.exp - theirs.iat);
  assert.equal(answer.identity, theirs.grants.identity);
  assert.equal(answer.ttl, 3600);
});

test("twilio: a numeric identity and an endpoint_id, as twilio's own AccessToken writes them", async () => {
  // A backend that passes its numeric user id: AccessToken writes String(identity).
  const options = { identity: 42, ttl: 600 };
  const grant = { serviceSid: 'IS' + '1'.repeat(32), endpointId: 'app:42:device-1' };
  const res = await postJson(
    '/token',
    {
      grant_type: 'client_credentials',
      ...options,
      grants: { data_sync: { service_sid: grant.serviceSid, endpoint_id: grant.endpointId } },
    },
    basic('twilio'),
  );
  assert.equal(res.status, 200, await res.clone().text());
  const answer = await res.json();
  const { payload } = await verify(answer.token);

  const { AccessToken } = twilio.jwt;
  const reference = new AccessToken('AC' + '0'.repeat(32), 'SK' + '0'.repeat(32), 'x'.repeat(32), options);
  reference.addGrant(new AccessToken.SyncGrant(grant));
  const theirs = decodeJwt(reference.toJwt());

  assert.deepEqual(payload.grants, theirs.grants);
  assert.equal(payload.sub, theirs.grants.identity);
  assert.equal(answer.identity, '42');
  assert.equal(payload.exp - payload.iat, theirs.exp - theirs.iat);
});

// -- Streaming platform ------------------------------------------------------------------

test('stream: the operator-token request at /auth/v1/access-tokens answers {token}', async () => {
  // The platform's demo backend: the browser's options posted as they are, operator
  // token as Bearer; the browser reads body.token.
  const options = {
    scopes: ['broadcaster'],
    userId: 'admin',
    ttl: 86400,
    data: { displayName: 'demo', mirrors: [{ id: 'k1', streamName: 'demo', kind: 'pipe' }] },
  };
  const res = await postJson('/auth/v1/access-tokens', options, `Bearer ${CLIENTS.stream.client_secret}`);
  assert.equal(res.status, 200, await res.clone().text());
  const body = await res.json();
  const { payload } = await verify(body.token);
  assert.equal(payload.sub, 'admin');
  assert.equal(payload.scope, 'broadcaster');
  assert.deepEqual(payload.data, options.data);
  // Asked for a day; the client's ceiling is an hour: clamped, and the answer says so.
  assert.equal(body.ttl, 3600);
  assert.equal(payload.exp - payload.iat, 3600);
});
