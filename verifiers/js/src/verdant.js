// Verdant (formerly lo-fi) server: verify authserver's RS256 tokens instead of a shared
// HS256 secret.
//
// @verdant-web/server 2.x builds its own `TokenVerifier({secret})` in the Server constructor
// and calls `tokenVerifier.verifyToken(token)` synchronously (jsonwebtoken with the shared
// secret) at the start of every entry point: `handleUpgrade`, `handleRequest`,
// `handleFetch`, `handleFileRequest`, `handleFileFetch`. Verifying against a remote JWKS
// (and a status list) is asynchronous, so the adapter verifies first and hands the result
// to the synchronous call:
//
// 1. each entry point is wrapped: it reads the token exactly as Verdant does
//    (`getRequestToken`), awaits `verifier.verify(token)` and keeps the outcome for that
//    token while the original entry point runs its synchronous start;
// 2. `tokenVerifier` is replaced by one whose `verifyToken(token)` returns that outcome as
//    Verdant's `TokenInfo` (or throws the VerdantError Verdant expects: 4012 TokenExpired,
//    4011 InvalidToken, 5000 Unexpected when the keys could not be fetched).
//
// A token that did not pass through a wrapped entry point is refused: nothing reaches
// Verdant unverified.

import { VerdantError } from '@verdant-web/common';

import { InvalidTokenError } from './errors.js';
import { guardSocket } from './middleware.js';

const ENTRY_POINTS = ['handleRequest', 'handleFetch', 'handleFileRequest', 'handleFileFetch'];

/**
 * Verdant's TokenInfo from authserver's claims: `sub` → userId, `lib` → libraryId, `url` →
 * syncEndpoint, `role`, `type` (the claim names of Verdant's own TokenProvider, and of
 * authserver's `verdant` client profile).
 */
export function tokenInfoFromClaims(claims, token) {
  if (typeof claims.lib !== 'string' || claims.lib === '') {
    throw new InvalidTokenError('missing_claim', 'no lib (Verdant libraryId) claim');
  }
  return {
    userId: claims.sub,
    libraryId: claims.lib,
    syncEndpoint: claims.url,
    role: claims.role,
    type: claims.type ?? 0, // ReplicaType.Realtime, TokenProvider's default
    token,
  };
}

/**
 * A drop-in for Verdant's `TokenVerifier`: `verifyToken(token)` is synchronous like
 * Verdant's, and answers for tokens that `prepare(token)` verified just before.
 */
export class AuthserverTokenVerifier {
  /**
   * @param {{verify(token: string): Promise<Record<string, any>>}} verifier
   * @param {{toTokenInfo?: (claims: Record<string, any>, token: string) => object}} [options]
   */
  constructor(verifier, options = {}) {
    this.verifier = verifier;
    this.toTokenInfo = options.toTokenInfo ?? tokenInfoFromClaims;
    /** @type {Map<string, {outcome: {info?: object, error?: VerdantError}, holders: number}>} */
    this.prepared = new Map();
  }

  /** Verify `token` now; the result is kept until `release(token)`. */
  async prepare(token) {
    let outcome;
    try {
      const claims = await this.verifier.verify(token);
      outcome = { info: this.toTokenInfo(claims, token) };
    } catch (err) {
      outcome = { error: toVerdantError(err) };
    }
    const held = this.prepared.get(token);
    if (held) {
      held.holders += 1;
      held.outcome = outcome;
    } else {
      this.prepared.set(token, { outcome, holders: 1 });
    }
  }

  release(token) {
    const held = this.prepared.get(token);
    if (held && --held.holders <= 0) this.prepared.delete(token);
  }

  /** Verdant's synchronous interface. */
  verifyToken = (token) => {
    const held = this.prepared.get(token);
    if (!held) throw new VerdantError(VerdantError.Code.InvalidToken, undefined, 'token was not verified by authserver-verifier');
    if (held.outcome.error) throw held.outcome.error;
    return held.outcome.info;
  };
}

/**
 * Make a constructed `@verdant-web/server` `Server` verify authserver tokens with `verifier`.
 * Call it right after `new Server({...})` (its `tokenSecret` is then unused: pass any
 * string) and before the server takes requests. Returns the adapter.
 *
 * @param {any} server a `Server` from @verdant-web/server 2.x
 * @param {{verify(token: string): Promise<Record<string, any>>}} verifier
 */
export function useAuthserverTokens(server, verifier, options = {}) {
  for (const name of ['tokenVerifier', 'getRequestToken', 'handleUpgrade', ...ENTRY_POINTS]) {
    if (!(name in server)) {
      throw new TypeError(`useAuthserverTokens: this Verdant server has no ${name}; it supports @verdant-web/server 2.x`);
    }
  }
  const adapter = new AuthserverTokenVerifier(verifier, options);
  server.tokenVerifier = adapter;

  const wrap = (original, socketOf = () => undefined) =>
    async function verifiedFirst(req, ...rest) {
      let token = null;
      try {
        token = server.getRequestToken(req);
      } catch {
        // No token: Verdant's own code answers it (it throws the same way again).
      }
      if (token === null) return original(req, ...rest);
      // Verdant's own handleUpgrade never waits; this wait does, on a socket Node's http
      // server no longer listens to for errors: a reset meanwhile must not crash the process.
      const release = guardSocket(socketOf(rest));
      try {
        await adapter.prepare(token);
      } finally {
        release();
      }
      try {
        // Verdant calls verifyToken before its first await, so the synchronous start of
        // `original` is all that needs the prepared outcome.
        return original(req, ...rest);
      } finally {
        adapter.release(token);
      }
    };

  for (const name of ENTRY_POINTS) server[name] = wrap(server[name]);

  // The upgrade listener was registered by the constructor (attach()); swap it.
  const originalUpgrade = server.handleUpgrade;
  const wrappedUpgrade = wrap(originalUpgrade, ([socket]) => socket);
  if (server.httpServer) {
    server.httpServer.off('upgrade', originalUpgrade);
    server.httpServer.on('upgrade', wrappedUpgrade);
  }
  server.handleUpgrade = wrappedUpgrade;
  // attach() to another http server later must move the wrapped listener too.
  const originalAttach = server.attach;
  server.attach = (httpServer, attachOptions) => {
    originalAttach(httpServer, attachOptions);
    httpServer.off('upgrade', server.handleUpgrade);
    httpServer.off('upgrade', originalUpgrade);
    httpServer.on('upgrade', wrappedUpgrade);
  };
  return adapter;
}

function toVerdantError(err) {
  const reason = err instanceof InvalidTokenError ? err.reason : 'malformed';
  if (reason === 'expired') return new VerdantError(VerdantError.Code.TokenExpired, err);
  if (reason === 'jwks_unavailable' || reason === 'status_unavailable') {
    return new VerdantError(VerdantError.Code.Unexpected, err, `authserver-verifier: ${reason}`);
  }
  return new VerdantError(VerdantError.Code.InvalidToken, err, `authserver-verifier: ${reason}`);
}
