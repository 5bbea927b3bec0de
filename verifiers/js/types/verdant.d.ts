// Types of authserver-verifier/verdant.
import type { AccessTokenClaims, Verifier } from './index.js';

/** @verdant-web/server's TokenInfo. */
export interface VerdantTokenInfo {
  userId: string;
  libraryId: string;
  /** The token's `url` claim; undefined when the token has none. */
  syncEndpoint: string | undefined;
  role?: string;
  type: number;
  token: string;
}

export interface VerdantAdapterOptions {
  /** Build Verdant's TokenInfo from the claims (default: sub, lib, url, role, type). */
  toTokenInfo?: (claims: AccessTokenClaims, token: string) => VerdantTokenInfo;
}

export declare function tokenInfoFromClaims(claims: AccessTokenClaims, token: string): VerdantTokenInfo;

export declare class AuthserverTokenVerifier {
  constructor(verifier: Pick<Verifier, 'verify'>, options?: VerdantAdapterOptions);
  prepare(token: string): Promise<void>;
  release(token: string): void;
  verifyToken: (token: string) => VerdantTokenInfo;
}

/** Make a @verdant-web/server 2.x Server verify authserver tokens; returns the adapter. */
export declare function useAuthserverTokens(
  server: object,
  verifier: Pick<Verifier, 'verify'>,
  options?: VerdantAdapterOptions,
): AuthserverTokenVerifier;
