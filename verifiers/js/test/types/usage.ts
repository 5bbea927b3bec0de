// Compiled (not run) by types.test.js: the declared API accepts what the README shows and
// refuses what it should not.
import http from 'node:http';
import {
  createVerifier,
  createTokenDeadlines,
  expressAuth,
  InvalidTokenError,
  requireToken,
  TOKEN_CLOSE_CODE,
  type AccessTokenClaims,
  type Reason,
} from 'authserver-verifier';
import { useAuthserverTokens } from 'authserver-verifier/verdant';

interface SyncClaims extends AccessTokenClaims {
  libraryId: string;
}

const verifier = createVerifier<SyncClaims>({ issuer: 'https://auth.example.com', audience: 'https://sync.example.com', leeway: 30 });

export async function check(token: string): Promise<string> {
  try {
    const claims = await verifier.verify(token);
    return claims.libraryId + claims.sub + claims.client_id;
  } catch (err) {
    if (err instanceof InvalidTokenError) {
      const reason: Reason = err.reason;
      const status: 400 | 401 | 503 = err.status;
      return `${reason} ${status}`;
    }
    throw err;
  }
}

http.createServer(requireToken(verifier, (req, res) => res.end(req.auth.libraryId)));
// With public paths the handler also runs without a token: req.auth may be null.
http.createServer(
  requireToken(verifier, (req, res) => res.end(req.auth ? req.auth.sub : 'ok'), { publicPaths: ['/healthz'] }),
);
// @ts-expect-error: req.auth is null on a public path
http.createServer(requireToken(verifier, (req, res) => res.end(req.auth.sub), { publicPaths: ['/healthz'] }));
export const middleware = expressAuth(verifier, { publicPaths: ['/healthz'] });
export const deadlines = createTokenDeadlines(verifier, { refreshBefore: 60, recheckInterval: 30 });
export const code: 4001 = TOKEN_CLOSE_CODE;
export const adapter = (server: object) => useAuthserverTokens(server, verifier).verifyToken('t').libraryId;

// @ts-expect-error: audience is required
createVerifier({ issuer: 'https://auth.example.com' });
// @ts-expect-error: status takes three values
createVerifier({ issuer: 'https://a', audience: 'b', status: 'maybe' });
