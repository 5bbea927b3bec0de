// The Status List encoding against the draft's own examples and test vectors
// (draft-ietf-oauth-status-list §4.1, §4.2, Appendix "Test vectors").

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { deflateSync } from 'node:zlib';
import { base64url } from 'jose';

import { decodeStatusList, readStatus, statusReference, InvalidTokenError } from '../src/index.js';
import { encodeList } from './helpers/issuer.js';

test('§4.1 example: 1 bit, 16 tokens, bytes 0xB9 0xA3', () => {
  const list = decodeStatusList({ bits: 1, lst: 'eNrbuRgAAhcBXQ' });
  assert.deepEqual([...list.bytes], [0xb9, 0xa3]);
  const expected = [1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1];
  assert.deepEqual(
    expected.map((_, idx) => readStatus(list, idx)),
    expected,
  );
  assert.equal(readStatus(list, 16), null); // outside the list
});

test('§4.1 example: 2 bits, 12 tokens, bytes 0xC9 0x44 0xF9', () => {
  const lst = base64url.encode(Buffer.from('78da3be9f2130003df0207', 'hex'));
  const list = decodeStatusList({ bits: 2, lst });
  assert.deepEqual([...list.bytes], [0xc9, 0x44, 0xf9]);
  const expected = [1, 2, 0, 3, 0, 1, 0, 1, 1, 2, 3, 3];
  assert.deepEqual(
    expected.map((_, idx) => readStatus(list, idx)),
    expected,
  );
});

// Appendix test vectors: 2^20 entries, all 0 except these.
const VECTOR_1 = {
  lst:
    'eNrt3AENwCAMAEGogklACtKQPg9LugC9k_ACvreiogEAAKkeCQAAAAAAAAAAAAAAAAAAAIBylgQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAXG9IAAAAAAAAAPwsJAAAAAAAAAAAAAAAvhsSAAAAAAAAAAAA7KpLAAAAAAAAAAAAAAAAAAAAAJsLCQAAAAAAAAAAADjelAAAAAAAAAAAKjDMAQAAAACAZC8L2AEb',
  set: { 0: 1, 1993: 1, 25460: 1, 159495: 1, 495669: 1, 554353: 1, 645645: 1, 723232: 1, 854545: 1, 934534: 1, 1000345: 1 },
};
const VECTOR_2 = {
  lst:
    'eNrt2zENACEQAEEuoaBABP5VIO01fCjIHTMStt9ovGVIAAAAAABAbiEBAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEB5WwIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAID0ugQAAAAAAAAAAAAAAAAAQG12SgAAAAAAAAAAAAAAAAAAAAAAAAAAAOCSIQEAAAAAAAAAAAAAAAAAAAAAAAD8ExIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAwJEuAQAAAAAAAAAAAAAAAAAAAAAAAMB9SwIAAAAAAAAAAAAAAAAAAACoYUoAAAAAAAAAAAAAAEBqH81gAQw',
  set: { 0: 1, 1993: 2, 25460: 1, 159495: 3, 495669: 1, 554353: 1, 645645: 2, 723232: 1, 854545: 1, 934534: 2, 1000345: 3 },
};

for (const [bits, vector] of [
  [1, VECTOR_1],
  [2, VECTOR_2],
]) {
  test(`test vector: ${bits}-bit list of 2^20 entries`, () => {
    const list = decodeStatusList({ bits, lst: vector.lst });
    assert.equal(list.bytes.length, (2 ** 20 * bits) / 8);
    for (const [idx, value] of Object.entries(vector.set)) assert.equal(readStatus(list, Number(idx)), value, `idx ${idx}`);
    for (const idx of [1, 2, 1992, 1994, 25461, 2 ** 20 - 1]) assert.equal(readStatus(list, idx), 0, `idx ${idx}`);
    assert.equal(readStatus(list, 2 ** 20), null);
  });
}

test('4 and 8 bits: our encoder and the decoder agree on every index', () => {
  for (const bits of [1, 2, 4, 8]) {
    const statuses = Array.from({ length: 100 }, (_, i) => (i * 7) % 2 ** bits);
    const list = decodeStatusList(encodeList(statuses, bits));
    statuses.forEach((value, idx) => assert.equal(readStatus(list, idx), value));
  }
});

test('a malformed status list is refused', () => {
  const lst = base64url.encode(deflateSync(Buffer.alloc(4)));
  // Bytes after the ZLIB stream: inflate stopped at its end and the list was accepted.
  const trailing = base64url.encode(Buffer.concat([deflateSync(Buffer.alloc(4)), Buffer.from('tail')]));
  for (const bad of [null, [], { bits: 3, lst }, { bits: 1 }, { bits: 1, lst: 'not base64url!' }, { bits: 1, lst: 'AAAA' }, { bits: 1, lst: trailing }]) {
    assert.throws(() => decodeStatusList(bad), TypeError, JSON.stringify(bad));
  }
  // A zlib bomb: 32 MiB of zeros compresses to 32 KiB.
  const bomb = base64url.encode(deflateSync(Buffer.alloc(32 * 1024 * 1024)));
  assert.throws(() => decodeStatusList({ bits: 1, lst: bomb }), /4 MiB/);
  // The Python verifier's bound (MAX_STATUS_LIST_BYTES): a 5 MiB list was used here only.
  const large = base64url.encode(deflateSync(Buffer.alloc(5 * 1024 * 1024)));
  assert.throws(() => decodeStatusList({ bits: 1, lst: large }), /4 MiB/);
  assert.equal(decodeStatusList({ bits: 1, lst: base64url.encode(deflateSync(Buffer.alloc(4 * 1024 * 1024))) }).bytes.length, 4 * 1024 * 1024);
});

test('the status claim: absent, well formed, malformed', () => {
  assert.equal(statusReference({ sub: 'x' }), null);
  assert.deepEqual(statusReference({ status: { status_list: { idx: 3, uri: 'https://a.example/s/1' } } }), {
    idx: 3,
    uri: 'https://a.example/s/1',
  });
  for (const status of [
    'x',
    {},
    { status_list: [] },
    { status_list: { idx: -1, uri: 'https://a/s' } },
    { status_list: { idx: 1.5, uri: 'https://a/s' } },
    { status_list: { idx: '1', uri: 'https://a/s' } },
    { status_list: { idx: 1 } },
    { status_list: { idx: 1, uri: 'not a uri' } },
    { status_list: { idx: 1, uri: 'file:///etc/passwd' } },
  ]) {
    assert.throws(
      () => statusReference({ status }),
      (err) => err instanceof InvalidTokenError && err.reason === 'invalid_status',
      JSON.stringify(status),
    );
  }
});
