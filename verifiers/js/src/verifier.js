// createVerifier: authserver's access tokens (RFC 9068 JWTs) verified offline with jose.

import {
  createRemoteJWKSet,
  createLocalJWKSet,
  customFetch,
  jwksCache,
  decodeProtectedHeader,
  errors,
} from 'jose';

import { jwtVerifyAnyKey } from './candidates.js';
import { InvalidTokenError, REASONS } from './errors.js';
import { REFRESH_AHEAD, StatusListCache, STATUS_LIST_MEDIA_TYPE, statusReference, VALID, INVALID, SUSPENDED } from './statuslist.js';

/** Defaults of every option; docs and types say the same. Durations are in seconds. */
export const DEFAULTS = Object.freeze({
  leeway: 30,
  // <= authserver's key publish-ahead (1 h): every verifier has seen a key before it signs.
  jwksCacheMaxAge: 300,
  // An unknown kid refetches the JWKS at most this often: a flood of forged kids costs the
  // issuer one request per interval.
  jwksCooldown: 10,
  // When the issuer cannot be reached, the last key set fetched stays usable this long.
  jwksStaleIfError: 3600,
  timeout: 5,
  maxResponseBytes: 512 * 1024,
  maxTokenLength: 16 * 1024,
  status: 'if-present',
  statusListMinTtl: 1,
  statusListMaxTtl: 3600,
  // authserver's default AUTHSERVER_STATUS_LIST_EXPIRY: against a default server a list's
  // own exp and this bound agree; against one with a longer expiry an unreachable issuer
  // still hides a revocation for at most 15 minutes. The Python verifier's
  // status_max_stale has the same default.
  statusListMaxStale: 900,
  statusListRetryInterval: 5,
});

const REQUIRED_CLAIMS = ['iss', 'exp', 'aud', 'sub', 'client_id', 'iat', 'jti']; // RFC 9068 §2.2
const TIME_CLAIMS = ['exp', 'nbf', 'iat'];
// Claims authserver writes only as non-empty strings when it writes them: scope is
// space-delimited (RFC 9068 §2.2.3, RFC 8693 §4.2), email and name are the user's (OpenID
// Connect Core §5.1); as authserver_verifier.rules.STRING_CLAIMS.
const STRING_CLAIMS = ['scope', 'email', 'name'];
// Header parameters this verifier knows; anything that changes how the JWS is processed
// (crit, b64, jku, x5u, jwk, ...) is refused instead of trusted or ignored.
const KNOWN_HEADER = new Set(['alg', 'typ', 'kid']);
// The longest header segment read (base64url characters), as the Python verifier caps it.
const MAX_HEADER_SEGMENT = 1024;

/**
 * Whether `value` could be authserver's AUTHSERVER_ISSUER: an http(s) URL, its scheme in
 * lower case, naming a host and, if any, a port from 1 to 65535, with no query, fragment,
 * user name, white space or control character (RFC 8414 §2; authserver refuses any other),
 * as the Python verifier checks it. Anything else never matches a token's iss.
 */
function isIssuer(value) {
  if (typeof value !== 'string' || !/^https?:\/\/[^/]/.test(value) || !URL.canParse(value)) return false;
  if (/[?#\s\x00-\x1f\x7f-\x9f]/.test(value)) return false;
  const url = new URL(value);
  const authority = value.slice(value.indexOf('//') + 2).split('/')[0];
  return !authority.includes('@') && !authority.endsWith(':') && url.port !== '0';
}

/**
 * @param {object} options see types/index.d.ts (`VerifierOptions`)
 */
export function createVerifier(options = {}) {
  const { audience } = options;
  if (!isIssuer(options.issuer)) {
    throw new TypeError('createVerifier: issuer must be the http(s) URL authserver puts in iss');
  }
  // authserver drops a trailing slash from AUTHSERVER_ISSUER (its iss and metadata never
  // have one), so "https://auth.example.com/" names the same issuer; the Python verifier
  // drops it too.
  const issuer = options.issuer.replace(/\/+$/, '');
  const audiences = Array.isArray(audience) ? audience : [audience];
  if (!audiences.length || audiences.some((a) => typeof a !== 'string' || !a)) {
    throw new TypeError('createVerifier: audience must be a non-empty string (or an array of them)');
  }
  const config = { ...DEFAULTS, ...stripUndefined(options), issuer };
  if (!['if-present', 'required', 'off'].includes(config.status)) {
    throw new TypeError('createVerifier: status must be "if-present", "required" or "off"');
  }
  const now = config.clock ?? Date.now;
  const secureOnly = issuer.startsWith('https:');
  const http = boundedFetch(config, secureOnly, config.fetch ?? fetch);

  // -- keys: discovery, then jose's remote JWK set ---------------------------------------
  let remote = null; // jose's RemoteJWKSet, once jwks_uri is known
  let discovery = null; // the in-flight discovery
  let discoveryRetryAt = 0;
  let discoveryError = null;
  const cache = {}; // jose's jwksCache: {uat, jwks} of the last successful fetch
  let jwksRetryAt = 0; // after a failed fetch, the next attempt waits until then
  let jwksFailing = false; // the last fetch failed: the last good set answers meanwhile
  let jwksFailedAt = 0; // Date.now() when it failed
  let jwksLastError = null; // what the last failed fetch met, for the refusals meanwhile
  let jwksRefreshing = null; // a background reload of jose's set
  let jwksHeld = null; // {etag, body} of the last 200: a refetch is a conditional GET

  /**
   * jose's fetch of the JWKS, made conditional: `If-None-Match` with the ETag of the set
   * held, and a 304 handed to jose as that same set (200), so it counts as fresh again.
   */
  async function fetchJwks(url, init) {
    const headers = Object.fromEntries(new Headers(init?.headers));
    if (jwksHeld?.etag) headers['if-none-match'] = jwksHeld.etag;
    const response = await http(url, { ...init, headers, accept: 'application/json, application/jwk-set+json' });
    if (response.status === 304 && jwksHeld) {
      return new Response(jwksHeld.body, { status: 200, headers: response.headers });
    }
    if (response.status !== 200) return response;
    const body = withoutUnusableEntries(new Uint8Array(await response.arrayBuffer()));
    const etag = response.headers.get('etag');
    jwksHeld = etag ? { etag, body } : null;
    return new Response(body, { status: 200, headers: response.headers });
  }

  async function remoteSet() {
    if (remote) return remote;
    if (now() < discoveryRetryAt) {
      throw new InvalidTokenError('jwks_unavailable', discoveryError?.message, { cause: discoveryError });
    }
    discovery ??= discover().finally(() => {
      discovery = null;
    });
    try {
      const jwksUri = await discovery;
      remote ??= createRemoteJWKSet(new URL(jwksUri), {
        cacheMaxAge: config.jwksCacheMaxAge * 1000,
        cooldownDuration: config.jwksCooldown * 1000,
        timeoutDuration: Math.round(config.timeout * 1000),
        [jwksCache]: cache,
        [customFetch]: fetchJwks,
      });
      return remote;
    } catch (err) {
      discoveryError = err;
      discoveryRetryAt = now() + config.jwksCooldown * 1000;
      throw new InvalidTokenError('jwks_unavailable', err.message, { cause: err });
    }
  }

  async function discover() {
    if (config.jwksUri) return checkedUrl(config.jwksUri, secureOnly, 'jwksUri');
    // RFC 8414 §3.1: the metadata lives at /.well-known/oauth-authorization-server with the
    // issuer's path (if any) after it; the same URL when the issuer has no path, else the
    // appended form is tried next. §3.3: its issuer must be the one we asked about.
    const { origin, pathname } = new URL(issuer);
    const path = pathname.replace(/\/+$/, '');
    const candidates = [...new Set([
      `${origin}/.well-known/oauth-authorization-server${path}`,
      `${issuer.replace(/\/+$/, '')}/.well-known/oauth-authorization-server`,
    ])];
    let failure;
    for (const url of candidates) {
      try {
        return await jwksUriFrom(url);
      } catch (err) {
        failure = err;
      }
    }
    throw failure;
  }

  async function jwksUriFrom(url) {
    let response;
    try {
      response = await http(url, { accept: 'application/json' });
    } catch (err) {
      throw new Error(`${url}: ${describe(err)}`, { cause: err });
    }
    if (response.status !== 200) throw new Error(`${url}: HTTP ${response.status}`);
    let metadata;
    try {
      metadata = await response.json();
    } catch {
      throw new Error(`${url}: not JSON`);
    }
    if (metadata?.issuer !== issuer) throw new Error(`${url}: metadata issuer does not match`);
    if (typeof metadata.jwks_uri !== 'string') throw new Error(`${url}: no jwks_uri`);
    return checkedUrl(metadata.jwks_uri, secureOnly, 'jwks_uri');
  }

  /** The key for a JWS header: jose's remote set, or the last good set when it is down. */
  async function getKey(header, token) {
    const set = await remoteSet();
    await afterClockStepBack(set);
    const stale = cache.jwks && now() < cache.uat + config.jwksStaleIfError * 1000;
    if (stale && jwksFailingNow()) {
      // The issuer failed the last fetch: the last good set answers at once, and the fetch
      // is retried in the background (once per cooldown), so an issuer that never answers
      // holds back one verification, not one per retry.
      if (now() >= jwksRetryAt) reloadInBackground(set);
      return lastGoodKey(header, token);
    }
    if (!stale && jwksFailing && now() < jwksRetryAt) {
      // No usable set (a cold start, or past jwksStaleIfError) and the last fetch failed
      // moments ago: refused at once until the cooldown, as the Python verifier does,
      // instead of every verification waiting out another fetch of an issuer that hangs.
      throw new InvalidTokenError('jwks_unavailable', `keys: ${jwksLastError ?? 'the last fetch failed'}`);
    }
    // In the last fifth of the set's max-age a use refreshes it in the background: under
    // steady traffic a rotation is seen before the cached set expires. (jose's own clock,
    // which wrote cache.uat and decides set.fresh.)
    const refreshFrom = cache.uat + (1 - REFRESH_AHEAD) * config.jwksCacheMaxAge * 1000;
    if (cache.uat && Date.now() >= refreshFrom && set.fresh && now() >= jwksRetryAt) {
      reloadInBackground(set);
    }
    try {
      const key = await set(header, token);
      jwksFailing = false;
      return usable(key);
    } catch (err) {
      if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys) throw err;
      if (err instanceof errors.JOSEError && !(err instanceof errors.JWKSTimeout) && err.code !== 'ERR_JOSE_GENERIC' && !(err instanceof errors.JWKSInvalid)) {
        throw err; // about the token, not the fetch
      }
      // The keys could not be fetched: not the token's fault. Use the last good set while
      // it is recent enough, and do not ask again before the cooldown.
      jwksRetryAt = now() + config.jwksCooldown * 1000;
      jwksFailed(err);
      if (stale) return lastGoodKey(header, token);
      throw new InvalidTokenError('jwks_unavailable', `keys: ${describe(err)}`, { cause: err });
    }
  }

  /**
   * The wall clock was stepped back since the set was fetched (NTP, a host's clock
   * corrected): jose counts the set's max-age and the cooldown of a refetch for an unknown
   * kid from that fetch on this clock, so it would keep the set, and refuse to fetch the
   * keys of a rotation, for as long as the step. Fetch it again now (at most once per
   * cooldown): jose counts from the new fetch. A retry planned further ahead than one
   * cooldown was planned on the clock before the step: it is due. Once such a refetch has
   * failed, the issuer is failing now: getKey answers from the last set and retries in the
   * background, as in any outage.
   */
  async function afterClockStepBack(set) {
    if (jwksRetryAt > now() + config.jwksCooldown * 1000) jwksRetryAt = 0;
    if (!cache.uat || Date.now() >= cache.uat || now() < jwksRetryAt || jwksFailingNow()) return;
    jwksRetryAt = now() + config.jwksCooldown * 1000;
    try {
      await set.reload();
      jwksFailing = false;
    } catch (err) {
      jwksFailed(err);
    }
  }

  /**
   * The last fetch failed after the cached set went stale, and recently (within a
   * cooldown and a fetch; retries keep it recent while the outage lasts) or a retry still
   * runs: the issuer is failing now. An older failure is no reason to use a stale set: a
   * set fetched since may lack a retired key. (jose's clock: it wrote cache.uat.) A set
   * fetched before the clock was stepped back counts as stale here: jose holds it fresh
   * (and refuses a kid it lacks without asking) for as long as the step.
   */
  function jwksFailingNow() {
    if (!jwksFailing) return false;
    const steppedBack = cache.uat > Date.now();
    if (!steppedBack && !(jwksFailedAt >= cache.uat + config.jwksCacheMaxAge * 1000)) return false;
    const recent = (2 * config.jwksCooldown + config.timeout) * 1000;
    return jwksRefreshing !== null || Date.now() - jwksFailedAt < recent;
  }

  /** Note a failed fetch of the key set: what it met, and when (jose's clock). */
  function jwksFailed(err) {
    jwksFailing = true;
    jwksFailedAt = Date.now();
    jwksLastError = describe(err);
  }

  function reloadInBackground(set) {
    if (jwksRefreshing) return;
    jwksRetryAt = now() + config.jwksCooldown * 1000;
    jwksRefreshing = set
      .reload()
      .then(
        () => {
          jwksFailing = false;
        },
        jwksFailed,
      )
      .finally(() => {
        jwksRefreshing = null;
      });
  }

  /** A key of the last good set, kept while the issuer cannot be reached. A kid it lacks
   * may be a key published since: not the token's fault (jwks_unavailable, as the Python
   * verifier says), not unknown_kid. */
  async function lastGoodKey(header, token) {
    try {
      return usable(await createLocalJWKSet(cache.jwks)(header, token));
    } catch (err) {
      if (err instanceof errors.JWKSNoMatchingKey) {
        throw new InvalidTokenError('jwks_unavailable', 'the issuer cannot be reached and its last keys lack this kid', { cause: err });
      }
      throw err;
    }
  }

  const statusLists = new StatusListCache({
    getKey,
    issuer,
    now,
    leeway: config.leeway,
    minTtl: config.statusListMinTtl,
    maxTtl: config.statusListMaxTtl,
    maxStale: config.statusListMaxStale,
    retryInterval: config.statusListRetryInterval,
    timeout: config.timeout,
    async fetchToken(uri, etag) {
      checkedUrl(uri, secureOnly, 'status_list.uri');
      const headers = etag ? { 'if-none-match': etag } : {};
      let response;
      try {
        response = await http(uri, { accept: STATUS_LIST_MEDIA_TYPE, headers });
      } catch (err) {
        // undici's own message is "fetch failed": the cause (ECONNREFUSED, timed out)
        // is what an operator reading the reason needs, as for the JWKS.
        throw new Error(describe(err), { cause: err });
      }
      if (response.status === 304 && etag) return { notModified: true };
      if (response.status !== 200) throw new Error(`HTTP ${response.status}`);
      // draft-ietf-oauth-status-list §8.1: the list comes as application/statuslist+jwt
      // (the Python verifier refuses anything else too).
      const type = (response.headers.get('content-type') || '').split(';')[0].trim().toLowerCase();
      if (type !== STATUS_LIST_MEDIA_TYPE) throw new Error(`not ${STATUS_LIST_MEDIA_TYPE}`);
      return { token: (await response.text()).trim(), etag: response.headers.get('etag') };
    },
  });

  function isCanonicalCompact(token) {
    const parts = token.split('.');
    return (
      parts.length === 3 &&
      parts.every((part) => /^[A-Za-z0-9_-]*$/.test(part) && Buffer.from(part, 'base64url').toString('base64url') === part)
    );
  }

  async function verifyUnchecked(token) {
    if (token === undefined || token === null || token === '') throw new InvalidTokenError('missing_token');
    if (typeof token !== 'string') throw new InvalidTokenError('malformed', 'not a string');
    if (token.length > config.maxTokenLength) throw new InvalidTokenError('malformed', 'token too large');
    // The header segment is capped before it is decoded, as in the Python verifier
    // (authserver_verifier.rules.MAX_HEADER_SEGMENT): ours is about 120 characters.
    if (token.split('.', 1)[0].length > MAX_HEADER_SEGMENT) throw new InvalidTokenError('malformed', 'header too large');
    let header;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      throw new InvalidTokenError('malformed');
    }
    // The compact form exactly (RFC 7515 §7.1), each part canonical base64url: jose decodes
    // leniently, so "token\t", "token==" or a signature with other unused low bits were
    // accepted as the same token, and a denylist or cache keyed on the string sidestepped.
    if (!isCanonicalCompact(token)) throw new InvalidTokenError('malformed', 'not a compact JWS');
    // Pinned, never taken from the token (RFC 8725 §3.1), checked before any key is fetched.
    if (header.alg !== 'RS256') throw new InvalidTokenError('unsupported_alg');
    if (typeof header.typ !== 'string' || !/^(application\/)?at\+jwt$/i.test(header.typ)) {
      throw new InvalidTokenError('wrong_typ');
    }
    if (Object.keys(header).some((name) => !KNOWN_HEADER.has(name))) {
      throw new InvalidTokenError('unsupported_header');
    }
    if (typeof header.kid !== 'string' || header.kid === '') throw new InvalidTokenError('missing_kid');

    const currentDate = new Date(now());
    const { payload } = await jwtVerifyAnyKey(token, getKey, {
      issuer,
      audience: audiences,
      algorithms: ['RS256'],
      typ: 'at+jwt',
      clockTolerance: config.leeway,
      requiredClaims: REQUIRED_CLAIMS,
      currentDate,
    });
    for (const claim of ['exp', 'nbf', 'iat']) {
      // 1e400 parses to Infinity, which jose takes for a time: "never expires".
      if (claim in payload && !Number.isFinite(payload[claim])) {
        throw new InvalidTokenError('invalid_claim', `${claim} is not a time`);
      }
    }
    if (Array.isArray(payload.aud) && payload.aud.some((value) => typeof value !== 'string')) {
      throw new InvalidTokenError('wrong_audience', 'aud holds a value that is not a string');
    }
    if (typeof payload.iat === 'number' && payload.iat > currentDate.getTime() / 1000 + config.leeway) {
      throw new InvalidTokenError('issued_in_future');
    }
    // RFC 9068 §2.2 claims present and not empty, as the Python verifier has them
    // (joserfc's "essential"): null is missing, "", [] and {} are invalid.
    for (const claim of REQUIRED_CLAIMS) {
      const reason = claimReason(claim, payload[claim]);
      if (reason) throw new InvalidTokenError(reason, `${claim}: ${REASONS[reason]}`);
    }
    for (const claim of ['sub', 'client_id', 'jti']) {
      if (typeof payload[claim] !== 'string') throw new InvalidTokenError('invalid_claim', `${claim} is not a string`);
    }
    // Handed to the application as they are: a list or an object where a string is
    // expected passes a membership test (['admin'].includes('admin')) it was never meant to.
    for (const claim of STRING_CLAIMS) {
      if (claim in payload && (typeof payload[claim] !== 'string' || payload[claim] === '')) {
        throw new InvalidTokenError('invalid_claim', `${claim} is not a non-empty string`);
      }
    }

    // draft-ietf-oauth-status-list §8.3: only once the token itself is valid.
    if (config.status !== 'off') {
      const ref = statusReference(payload);
      if (ref === null) {
        if (config.status === 'required') throw new InvalidTokenError('invalid_status', 'the token has no status claim');
      } else {
        // Lists come from the issuer's own URL space and nowhere else: a token cannot send
        // this verifier to another host (the same rule as the Python verifier).
        if (!ref.uri.startsWith(`${issuer}/`)) {
          throw new InvalidTokenError('invalid_status', "the status list is not under the issuer's URL");
        }
        const value = await statusLists.status(ref.uri, ref.idx);
        if (value === INVALID) throw new InvalidTokenError('revoked');
        if (value === SUSPENDED) throw new InvalidTokenError('suspended');
        if (value !== VALID) throw new InvalidTokenError('invalid_status', `status value ${value}`);
      }
    }
    return payload;
  }

  return {
    issuer,
    audience: audiences.length === 1 ? audiences[0] : audiences,
    /**
     * Resolve to the verified claims, or reject with InvalidTokenError; never another error.
     * @param {string} token
     */
    async verify(token) {
      try {
        return await verifyUnchecked(token);
      } catch (err) {
        throw toInvalidToken(err);
      }
    },
    /**
     * Discover the issuer and fetch its keys now (instead of at the first verification).
     * Rejects with InvalidTokenError `jwks_unavailable` when they cannot be had; call it
     * again to retry.
     */
    async ready() {
      discoveryRetryAt = 0;
      const set = await remoteSet();
      if (!set.fresh) {
        try {
          await set.reload();
        } catch (err) {
          throw new InvalidTokenError('jwks_unavailable', `keys: ${describe(err)}`, { cause: err });
        }
      }
    },
    /** Drop the cached key set and status lists: the next verification fetches them again. */
    async refresh() {
      statusLists.entries.clear();
      jwksRetryAt = 0;
      jwksFailing = false;
      if (remote) {
        try {
          // jose joins a fetch already under way, which may predate the change this call
          // is for (a retire): let it end, then fetch again.
          if (remote.reloading) await remote.reload().catch(() => {});
          await remote.reload();
        } catch (err) {
          throw new InvalidTokenError('jwks_unavailable', err.message, { cause: err });
        }
      }
    },
  };
}

/**
 * RFC 7518 §3.3: a key shorter than 2048 bits MUST NOT be used with RS256. jose refuses to
 * verify with one (a TypeError, which read as a malformed token); it is no key of the set,
 * as the Python verifier skips it: unknown_kid.
 */
function usable(key) {
  if (key?.algorithm?.modulusLength < 2048) throw new errors.JWKSNoMatchingKey();
  return key;
}

/**
 * The JWK set without the entries no verifier may use: private keys ("d": a publishing
 * bug, never trusted) and entries that are no JSON object at all. Both are skipped as the
 * Python verifier skips them (RFC 7517 §5: ignore the keys you cannot use), so a token
 * signed by a good key of the set verifies; jose refused the whole set for one such entry
 * (JWKSInvalid), which read as the issuer failing. A body that is no JSON is left to jose.
 */
function withoutUnusableEntries(body) {
  let set;
  try {
    set = JSON.parse(new TextDecoder().decode(body));
  } catch {
    return body;
  }
  const usable = (jwk) => jwk !== null && typeof jwk === 'object' && !Array.isArray(jwk) && !('d' in jwk);
  if (!Array.isArray(set?.keys) || set.keys.every(usable)) return body;
  return new TextEncoder().encode(JSON.stringify({ ...set, keys: set.keys.filter(usable) }));
}

/** Map whatever jose (or the network) threw to the one error type, with a reason. */
function toInvalidToken(err) {
  if (err instanceof InvalidTokenError) return err;
  const reason = (() => {
    // An exp of -1e400 (-Infinity) is no time, not a past one (the Python verifier's rule).
    if (err instanceof errors.JWTExpired) return claimReason('exp', err.payload?.exp) ?? 'expired';
    if (err instanceof errors.JWTClaimValidationFailed) {
      if (err.claim === 'typ') return 'wrong_typ'; // a header parameter, not a claim
      if (err.reason === 'missing') return 'missing_claim';
      // The Python verifier's rule (authserver_verifier.rules.check_claims): a null,
      // empty or wrongly typed value is that, whichever check it failed.
      const empty = claimReason(err.claim, err.payload?.[err.claim]);
      if (empty) return empty;
      if (err.reason === 'invalid') return 'invalid_claim';
      return (
        { iss: 'wrong_issuer', aud: 'wrong_audience', nbf: 'not_yet_valid', exp: 'expired', iat: 'issued_in_future' }[err.claim] ??
        'invalid_claim'
      );
    }
    if (err instanceof errors.JOSEAlgNotAllowed) return 'unsupported_alg';
    if (err instanceof errors.JWSSignatureVerificationFailed) return 'bad_signature';
    if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys) return 'unknown_kid';
    if (err instanceof errors.JOSENotSupported) return 'unsupported_header';
    return 'malformed';
  })();
  return new InvalidTokenError(reason, undefined, { cause: err });
}

/**
 * A fetch for metadata, keys and status lists: timeout, no redirects (a redirect could
 * leave https or the issuer), and a cap on the body size.
 */
function boundedFetch(config, secureOnly, fetchImpl) {
  return async (url, init = {}) => {
    const { accept, headers, signal, ...rest } = init;
    const response = await fetchImpl(url, {
      ...rest,
      method: 'GET',
      redirect: 'manual',
      headers: { ...Object.fromEntries(new Headers(headers)), accept: accept ?? '*/*' },
      signal: signal ?? AbortSignal.timeout(Math.round(config.timeout * 1000)),
    });
    const declared = Number(response.headers.get('content-length'));
    if (declared > config.maxResponseBytes) throw new Error(`${url}: response too large`);
    const body = await readLimited(response, config.maxResponseBytes, url);
    return new Response(response.status === 204 || response.status === 304 ? null : body, {
      status: response.status,
      headers: response.headers,
    });
  };
}

async function readLimited(response, limit, url) {
  if (!response.body) return new Uint8Array();
  const chunks = [];
  let size = 0;
  for await (const chunk of response.body) {
    size += chunk.byteLength;
    if (size > limit) {
      throw new Error(`${url}: response too large`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/**
 * One line for a failed fetch: undici's "fetch failed" says less than its cause. A system
 * error's code (ECONNREFUSED) names it best; any other code (a number: 0, an errno) names
 * nothing alone, so the cause's message says what happened, the code after it.
 */
function describe(err) {
  const cause = err?.cause;
  if (err?.name === 'TimeoutError' || cause?.name === 'TimeoutError') return 'timed out';
  const code = cause?.code;
  if (typeof code === 'string' && code) return code;
  const message = (typeof cause?.message === 'string' && cause.message) || err?.message || String(err);
  return typeof code === 'number' ? `${message} (code ${code})` : message;
}

function checkedUrl(value, secureOnly, what) {
  let url;
  try {
    url = new URL(value);
  } catch {
    throw new Error(`${what} is not a URL`);
  }
  if (url.protocol !== 'https:' && (secureOnly || url.protocol !== 'http:')) {
    throw new Error(`refusing to fetch ${what} ${url.protocol}// (the issuer is ${secureOnly ? 'https' : 'http'})`);
  }
  return url.href;
}

/**
 * `missing_claim` for a null RFC 9068 §2.2 claim, `invalid_claim` for another null claim
 * (`"nbf": null` is no time, and nbf is not required: the Python verifier says so too), for
 * a time that is not finite, or for "", [] or {}, else null.
 */
function claimReason(claim, value) {
  if (value === null) return REQUIRED_CLAIMS.includes(claim) ? 'missing_claim' : 'invalid_claim';
  // 1e400 and -1e400 read as infinities, which jose compares as times (nbf 1e400 was
  // not_yet_valid, exp -1e400 expired): no NumericDate, as in the Python verifier.
  if (TIME_CLAIMS.includes(claim) && typeof value === 'number' && !Number.isFinite(value)) return 'invalid_claim';
  if (value === '' || (Array.isArray(value) && value.length === 0)) return 'invalid_claim';
  if (typeof value === 'object' && value !== undefined && !Array.isArray(value) && Object.keys(value).length === 0) {
    return 'invalid_claim';
  }
  return null;
}

function stripUndefined(object) {
  return Object.fromEntries(Object.entries(object).filter(([, v]) => v !== undefined));
}
