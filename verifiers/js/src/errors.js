// The one error type a verifier rejects with.

/**
 * Every value `InvalidTokenError.reason` can take, with what it means. The Python verifier
 * (`authserver_verifier.REASONS`) gives the same name for the same failure; only
 * `wrong_subject` is this package's own (its WebSocket helper).
 */
export const REASONS = Object.freeze({
  missing_token: 'no bearer token was sent',
  invalid_request:
    'the Authorization header is malformed: Bearer with no token or with spaces in it, or the header sent more than once (RFC 6750 §3.1)',
  malformed: 'not a compact JWS/JWT, or a claim has the wrong type',
  unsupported_alg: 'alg is not RS256',
  wrong_typ: 'typ is not at+jwt (RFC 9068 §4)',
  unsupported_header: 'a header parameter this verifier does not understand (crit, b64, jku, ...)',
  missing_kid: 'the header names no kid',
  unknown_kid: 'no published key has this kid (refetched when allowed)',
  bad_signature: 'the signature does not verify',
  missing_claim: 'a required claim is missing (or null)',
  invalid_claim: 'a claim has the wrong type or an empty value',
  wrong_issuer: 'iss is not the configured issuer',
  wrong_audience: 'aud does not contain the configured audience',
  expired: 'exp has passed (beyond the leeway)',
  not_yet_valid: 'nbf is in the future (beyond the leeway)',
  issued_in_future: 'iat is in the future (beyond the leeway)',
  invalid_status:
    "the status claim is malformed or not the issuer's, its index is outside the list, or the status value is not one this verifier accepts",
  wrong_subject: 'a fresh token sent on an open connection is for another sub or client_id',
  revoked: 'the token status list says INVALID (0x01): the token was revoked',
  suspended: 'the token status list says SUSPENDED (0x02)',
  jwks_unavailable: "the issuer's metadata or keys could not be fetched (not the token's fault)",
  status_unavailable:
    'the status list could not be fetched or verified and no copy fresh enough is cached (not the token\'s fault)',
});

/** Reasons that say "the verifier could not decide", not "the token is bad": answer 503. */
export const UNAVAILABLE = Object.freeze(new Set(['jwks_unavailable', 'status_unavailable']));

export class InvalidTokenError extends Error {
  /**
   * @param {keyof typeof REASONS} reason
   * @param {string} [detail] says more than the reason; never contains the token
   * @param {{cause?: unknown}} [options]
   */
  constructor(reason, detail, options) {
    super(`${reason}: ${detail || REASONS[reason] || reason}`, options);
    this.name = 'InvalidTokenError';
    this.reason = reason;
  }

  /** True when the token was not judged (keys or status list unavailable): answer 503. */
  get unavailable() {
    return UNAVAILABLE.has(this.reason);
  }

  /** The HTTP status a resource server answers with: 401, 400 for a malformed request, or 503 when unavailable. */
  get status() {
    if (this.unavailable) return 503;
    return this.reason === 'invalid_request' ? 400 : 401;
  }
}
