// jwtVerify over a key set in which one kid may name several keys.

import { errors, jwtVerify } from 'jose';

/**
 * `jwtVerify(token, getKey, options)`, trying each key of the set when the token's kid
 * names several (RFC 7517 §4.5 only says kids SHOULD differ). jose refuses that case with
 * JWKSMultipleMatchingKeys, iterable over the candidates it could import; the first that
 * verifies the signature decides (its claim checks included), keys that cannot be used are
 * skipped, and the token is bad_signature when none verifies. The Python verifier tries the
 * keys alike.
 */
export async function jwtVerifyAnyKey(token, getKey, options) {
  try {
    return await jwtVerify(token, getKey, options);
  } catch (err) {
    if (!(err instanceof errors.JWKSMultipleMatchingKeys)) throw err;
    for await (const key of err) {
      try {
        return await jwtVerify(token, key, options);
      } catch (failure) {
        // A claim check failed: this key verified the signature, and its answer stands. A
        // key WebCrypto cannot use (a TypeError) is skipped, as the Python verifier skips it.
        if (failure instanceof errors.JOSEError && !(failure instanceof errors.JWSSignatureVerificationFailed)) throw failure;
      }
    }
    throw new errors.JWSSignatureVerificationFailed();
  }
}
