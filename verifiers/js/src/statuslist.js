// Token Status List (draft-ietf-oauth-status-list, revision 17 and later): the relying
// party's side. Section numbers are the draft's.

import { inflateSync } from 'node:zlib';
import { base64url } from 'jose';

import { jwtVerifyAnyKey } from './candidates.js';
import { InvalidTokenError } from './errors.js';

/** §5.1: the `typ` of a Status List Token in JWT format. */
export const STATUS_LIST_TYP = 'statuslist+jwt';
/** §8.1: the media type a Status Provider answers with. */
export const STATUS_LIST_MEDIA_TYPE = 'application/statuslist+jwt';
/** §7.1 status types. */
export const VALID = 0x00;
export const INVALID = 0x01;
export const SUSPENDED = 0x02;

/**
 * A decompressed list larger than this is refused (a zlib bomb, not a list): 32 Mi one-bit
 * entries, the Python verifier's bound (authserver's lists are 16 KiB).
 */
const MAX_LIST_BYTES = 4 * 1024 * 1024;

/**
 * Read `status.status_list` from a Referenced Token's claims (§6.2), or null when the token
 * has no `status` claim. A claim that is present but malformed is `invalid_status`.
 *
 * @param {Record<string, unknown>} claims
 * @returns {{idx: number, uri: string} | null}
 */
export function statusReference(claims) {
  const status = claims.status;
  if (status === undefined) return null;
  const fail = (detail) => new InvalidTokenError('invalid_status', detail);
  if (!isObject(status)) throw fail('status is not a JSON object');
  const ref = status.status_list;
  // Other status mechanisms may be defined (§6.1); this verifier only knows status_list
  // and refuses a token whose status it cannot check.
  if (!isObject(ref)) throw fail('status has no status_list object');
  const { idx, uri } = ref;
  if (!Number.isSafeInteger(idx) || idx < 0) throw fail('status_list.idx is not a non-negative integer');
  if (typeof uri !== 'string') throw fail('status_list.uri is not a string');
  let parsed;
  try {
    parsed = new URL(uri);
  } catch {
    throw fail('status_list.uri is not a URI');
  }
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') {
    throw fail('status_list.uri is not an http(s) URI');
  }
  return { idx, uri };
}

/**
 * Decode the JSON Status List of §4.2: `{bits, lst}` where `lst` is the base64url of the
 * ZLIB/DEFLATE-compressed byte array of §4.1.
 *
 * @param {unknown} statusList
 * @returns {{bits: 1|2|4|8, bytes: Uint8Array}}
 */
export function decodeStatusList(statusList) {
  if (!isObject(statusList)) throw new TypeError('status_list is not a JSON object');
  const { bits, lst } = statusList;
  if (![1, 2, 4, 8].includes(bits)) throw new TypeError('status_list.bits is not 1, 2, 4 or 8');
  if (typeof lst !== 'string' || !/^[A-Za-z0-9_-]*$/.test(lst)) {
    throw new TypeError('status_list.lst is not base64url');
  }
  let bytes;
  let compressed;
  try {
    compressed = base64url.decode(lst);
    const { buffer, engine } = inflateSync(compressed, { maxOutputLength: MAX_LIST_BYTES, info: true });
    bytes = buffer;
    // inflateSync stops at the end of the ZLIB stream and ignores what follows it: bytes
    // after the stream are no list (the Python verifier refuses them too).
    if (engine.bytesWritten !== compressed.length) throw new Error('bytes after the ZLIB stream');
  } catch (cause) {
    throw new TypeError('status_list.lst is not a ZLIB stream of at most 4 MiB', { cause });
  }
  return { bits, bytes: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength) };
}

/**
 * The status at `idx` (§4.1 step 3: blocks of `bits` packed from the least significant bit
 * of each byte), or null when `idx` is outside the list.
 *
 * @param {{bits: number, bytes: Uint8Array}} list
 * @param {number} idx
 */
export function readStatus({ bits, bytes }, idx) {
  const perByte = 8 / bits;
  const byte = Math.floor(idx / perByte);
  if (byte >= bytes.length) return null;
  return (bytes[byte] >> ((idx % perByte) * bits)) & ((1 << bits) - 1);
}

/**
 * Fetches, verifies and caches Status List Tokens (§8.3), one entry per `uri`.
 *
 * Caching (§13.7): a list is used for `ttl` seconds after it was fetched (bounded to
 * [`minTtl`, `maxTtl`]; `maxTtl` when it has no `ttl`), and never after its `exp`. Then the
 * next check waits for a fresh copy, so a revocation is seen within one `ttl`.
 *
 * A refresh of a list held with an ETag is a conditional GET (`If-None-Match`): a 304 says
 * the held copy is still the current one, so it is fresh for another `ttl` and counts as
 * fetched now (still never used after its `exp`).
 *
 * When the fresh copy cannot be had (network, HTTP error, bad signature, wrong `sub`), the
 * last good copy keeps being used until `maxStale` seconds after it was fetched or its
 * `exp`, whichever comes first, with a retry at most every `retryInterval` seconds; after
 * that every token that points into the list is refused with `status_unavailable` (fail
 * closed after a bounded staleness).
 */
/**
 * The part of a cached document's lifetime (a list's ttl, the key set's max-age) at the
 * end of which a use of it refreshes it in the background.
 */
export const REFRESH_AHEAD = 0.2;

export class StatusListCache {
  /**
   * @param {object} options
   * @param {(header: object, token: object) => Promise<CryptoKey>} options.getKey the
   *   issuer's key set (the same JWKS as the access tokens)
   * @param {string} options.issuer an `iss` in the list, when present, must be this
   * @param {() => number} options.now milliseconds since the epoch
   * @param {(url: string, etag?: string) => Promise<{token: string, etag?: string} | {notModified: true}>} options.fetchToken
   *   GET the list (conditionally, with `If-None-Match: etag`, when an ETag is given)
   * @param {number} options.leeway seconds of clock skew for `exp`/`iat`
   * @param {number} options.minTtl
   * @param {number} options.maxTtl
   * @param {number} options.maxStale
   * @param {number} options.retryInterval
   */
  constructor(options) {
    this.options = options;
    /** @type {Map<string, {list?: object, etag?: string, ttlSeconds?: number, expMs?: number, fetchedAt?: number, freshUntil?: number, refreshFrom?: number, usableUntil?: number, retryAt?: number, lastError?: Error, pending?: Promise<void>}>} */
    this.entries = new Map();
  }

  /**
   * The status of `idx` in the list at `uri` (a number; 0 is VALID).
   *
   * @throws {InvalidTokenError} `status_unavailable` or `invalid_status`
   */
  async status(uri, idx) {
    const list = await this.list(uri);
    const value = readStatus(list, idx);
    // §8.3 step 6: an index outside the list must be rejected.
    if (value === null) throw new InvalidTokenError('invalid_status', 'status_list.idx is outside the list');
    return value;
  }

  async list(uri) {
    const now = this.options.now();
    let entry = this.entries.get(uri);
    if (entry === undefined) {
      entry = {};
      this.entries.set(uri, entry);
    }
    if (entry.fetchedAt !== undefined && now < entry.fetchedAt) {
      // The clock was stepped back since this copy was fetched: its ttl, counted on the
      // clock before the step, would keep it fresh (a revocation unseen) for as long as
      // the step. It is fetched again now; and while the issuer cannot be reached it is
      // used at most maxStale from now (counted from the fetch, as long as the step more).
      entry.freshUntil = now;
      entry.refreshFrom = now;
      entry.fetchedAt = now;
      entry.usableUntil = Math.min(entry.usableUntil, now + this.options.maxStale * 1000);
    }
    if ((entry.retryAt ?? 0) > now + this.options.retryInterval * 1000) entry.retryAt = 0; // planned before a step back
    const retryDue = now >= (entry.retryAt ?? 0);
    if (entry.list && now < entry.freshUntil) {
      // In the last fifth of its ttl a use refreshes the copy in the background: under
      // steady traffic the new copy is there before this one is stale.
      if (now >= entry.refreshFrom && retryDue) this.refreshInBackground(uri, entry);
      return entry.list;
    }
    if (entry.list && now < entry.usableUntil && this.failingNow(entry, now)) {
      // The issuer is failing now: the last copy answers at once (within its bound) and
      // the fetch is retried in the background, so an issuer that never answers holds
      // back the verifications during one fetch, not every verification at every retry.
      if (retryDue) this.refreshInBackground(uri, entry);
      return entry.list;
    }
    // Past its ttl while the issuer answered last time, or no copy: fetched before
    // answering, so a revocation is seen within one ttl however seldom tokens come. After
    // a failed fetch, the next one waits retryInterval: a Status Provider that is down is
    // not asked once per verification.
    if (now >= (entry.retryAt ?? 0)) {
      // One fetch at a time per list, whoever asks.
      entry.pending ??= this.refresh(uri, entry).finally(() => {
        entry.pending = undefined;
      });
      try {
        await entry.pending;
      } catch (err) {
        entry.lastError = err;
      }
      if (entry.list && this.options.now() < entry.freshUntil) return entry.list;
    }
    if (entry.list && this.options.now() < entry.usableUntil) return entry.list;
    throw new InvalidTokenError(
      'status_unavailable',
      `status list ${uri}: ${entry.lastError?.message ?? 'no usable copy'}`,
      { cause: entry.lastError },
    );
  }

  /**
   * Whether the last failure says the issuer is failing now: it came after the copy went
   * stale (a failed refresh ahead says nothing of later), and recently (within a retry
   * interval and a fetch; retries keep it recent while the outage lasts), or a retry is
   * still running. An older failure is no reason to answer from a stale copy: a list
   * fetched since may hold a revocation.
   */
  failingNow(entry, now) {
    if (!entry.lastError || !(entry.failedAt >= entry.freshUntil)) return false;
    const recent = (2 * this.options.retryInterval + (this.options.timeout ?? 5)) * 1000;
    return entry.pending !== undefined || now - entry.failedAt < recent;
  }

  /** Start a refresh of `entry` unless one runs; its failure is kept, never thrown. */
  refreshInBackground(uri, entry) {
    if (entry.pending) return;
    entry.pending = this.refresh(uri, entry)
      .catch((err) => {
        entry.lastError = err;
      })
      .finally(() => {
        entry.pending = undefined;
      });
  }

  async refresh(uri, entry) {
    const { now, retryInterval } = this.options;
    try {
      const { minTtl, maxTtl, maxStale } = this.options;
      const fetched = await this.options.fetchToken(uri, entry.list ? entry.etag : undefined);
      if (fetched.notModified) {
        if (!entry.list) throw new Error('HTTP 304 without a copy');
        // The issuer (or a cache before it) still serves a copy past its exp: that renews
        // nothing, and is a failed fetch, retried after retryInterval (as a success it sent
        // every verification back to the issuer).
        if (entry.expMs <= now()) throw new Error('HTTP 304 for a copy past its exp');
      } else {
        const { list, exp, ttl } = await this.verifyToken(fetched.token, uri);
        entry.list = list;
        entry.etag = fetched.etag ?? undefined;
        entry.ttlSeconds = Math.min(Math.max(ttl ?? maxTtl, minTtl), maxTtl);
        entry.expMs = exp === undefined ? Infinity : exp * 1000;
      }
      const fetchedAt = now();
      entry.fetchedAt = fetchedAt;
      entry.freshUntil = Math.min(fetchedAt + entry.ttlSeconds * 1000, entry.expMs);
      entry.refreshFrom = fetchedAt + (1 - REFRESH_AHEAD) * (entry.freshUntil - fetchedAt);
      entry.usableUntil = Math.min(fetchedAt + maxStale * 1000, entry.expMs);
      entry.retryAt = 0;
      entry.lastError = undefined;
    } catch (err) {
      entry.failedAt = now();
      entry.retryAt = entry.failedAt + retryInterval * 1000;
      throw err;
    }
  }

  /** §8.3 steps 3 and 4, and §5.1's rules for the JWT. */
  async verifyToken(jwt, uri) {
    const { getKey, issuer, leeway, now } = this.options;
    const { payload } = await jwtVerifyAnyKey(jwt, getKey, {
      algorithms: ['RS256'],
      typ: STATUS_LIST_TYP,
      requiredClaims: ['sub', 'iat', 'status_list'],
      clockTolerance: leeway,
      currentDate: new Date(now()),
    });
    // §8.3 step 4a: the list is the one the token points to.
    if (payload.sub !== uri) throw new Error(`status list sub ${JSON.stringify(payload.sub)} is not its uri`);
    if (payload.iss !== undefined && payload.iss !== issuer) {
      throw new Error('status list iss is not the issuer');
    }
    if (payload.iat > now() / 1000 + leeway) throw new Error('status list iat is in the future');
    // §11.2: an expired list is not relied upon, whatever jose's clockTolerance let through:
    // unusable on arrival, it is a failed fetch (retried after retryInterval), not a copy
    // that sends every verification back to the issuer (the Python verifier refuses it so).
    if (payload.exp !== undefined && payload.exp * 1000 <= now()) throw new Error('status list expired');
    // A time or a duration is a finite number within the year 5138, as the Python verifier
    // has them (1e400 reads as Infinity: a list "never expiring" or "fresh forever").
    for (const claim of ['iat', 'exp', 'nbf', 'ttl']) {
      if (payload[claim] !== undefined && !isTime(payload[claim])) throw new Error(`status list ${claim} is not a time`);
    }
    // §5.1: ttl, when present, is a positive number.
    if (payload.ttl !== undefined && !(typeof payload.ttl === 'number' && payload.ttl > 0)) {
      throw new Error('status list ttl is not a positive number');
    }
    return { list: decodeStatusList(payload.status_list), exp: payload.exp, ttl: payload.ttl };
  }
}

/** The largest time or duration a list may name (the Python verifier's bound). */
const LARGEST_TIME = 1e11;

function isTime(value) {
  return typeof value === 'number' && Number.isFinite(value) && Math.abs(value) <= LARGEST_TIME;
}

function isObject(value) {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
