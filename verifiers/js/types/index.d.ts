// Types of the public API of authserver-verifier.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';

/** The verified claims of an authserver access token (RFC 9068 and authserver's own). */
export interface AccessTokenClaims {
  iss: string;
  sub: string;
  aud: string | string[];
  exp: number;
  iat: number;
  nbf?: number;
  jti: string;
  client_id: string;
  scope?: string;
  email?: string;
  name?: string;
  status?: { status_list: { idx: number; uri: string } };
  [claim: string]: unknown;
}

export type Reason =
  | 'missing_token'
  | 'invalid_request'
  | 'malformed'
  | 'unsupported_alg'
  | 'wrong_typ'
  | 'unsupported_header'
  | 'missing_kid'
  | 'unknown_kid'
  | 'bad_signature'
  | 'missing_claim'
  | 'invalid_claim'
  | 'wrong_issuer'
  | 'wrong_audience'
  | 'expired'
  | 'not_yet_valid'
  | 'issued_in_future'
  | 'invalid_status'
  | 'wrong_subject'
  | 'revoked'
  | 'suspended'
  | 'jwks_unavailable'
  | 'status_unavailable';

export declare const REASONS: Readonly<Record<Reason, string>>;

export declare class InvalidTokenError extends Error {
  constructor(reason: Reason, detail?: string, options?: { cause?: unknown });
  readonly name: 'InvalidTokenError';
  readonly reason: Reason;
  /** True for `jwks_unavailable` and `status_unavailable`: the token was not judged. */
  readonly unavailable: boolean;
  /** 401; 400 for `invalid_request` (a malformed Authorization header); 503 when `unavailable`. */
  readonly status: 400 | 401 | 503;
}

export interface VerifierOptions {
  /** AUTHSERVER_ISSUER: every token's `iss`. A trailing `/` is dropped (authserver drops it too), so `verifier.issuer` is the value `iss` must equal. */
  issuer: string;
  /** This sync server's audience (or several): the token's `aud` must contain one. */
  audience: string | string[];
  /** Seconds of clock skew for exp, nbf, iat (default 30). */
  leeway?: number;
  /** Skip discovery and fetch keys from this URL. */
  jwksUri?: string;
  /** Seconds the JWKS is cached (default 300; keep it below authserver's publish-ahead). */
  jwksCacheMaxAge?: number;
  /** An unknown kid refetches the JWKS at most once per this many seconds (default 10). */
  jwksCooldown?: number;
  /** Seconds the last fetched JWKS stays usable while the issuer cannot be reached (default 3600). */
  jwksStaleIfError?: number;
  /** Seconds per HTTP request (default 5). */
  timeout?: number;
  /** Larger metadata, JWKS or status list responses are refused (default 512 KiB). */
  maxResponseBytes?: number;
  /** Longer tokens are refused as malformed (default 16 KiB). */
  maxTokenLength?: number;
  /**
   * Token Status List checks: 'if-present' (default) checks tokens that carry a `status`
   * claim, 'required' also refuses tokens without one, 'off' never fetches a list.
   */
  status?: 'if-present' | 'required' | 'off';
  /** Lower bound on a status list's `ttl`, seconds (default 1). */
  statusListMinTtl?: number;
  /** Upper bound on a status list's `ttl` (and the cache time of a list without one), seconds (default 3600). */
  statusListMaxTtl?: number;
  /** When a list cannot be refreshed, the last good copy is used this many seconds after it was last fetched or confirmed by a 304 (never after its exp), then tokens are refused with `status_unavailable` (default 900, as the Python verifier's `status_max_stale`). */
  statusListMaxStale?: number;
  /** After a failed list fetch, the next attempt waits this many seconds (default 5). */
  statusListRetryInterval?: number;
  /** Milliseconds since the epoch (default Date.now); for tests. */
  clock?: () => number;
  /** The fetch to use (default globalThis.fetch). */
  fetch?: typeof fetch;
}

export interface Verifier<Claims extends AccessTokenClaims = AccessTokenClaims> {
  readonly issuer: string;
  readonly audience: string | string[];
  /** Resolves to the verified claims; rejects with InvalidTokenError and never anything else. */
  verify(token: string): Promise<Claims>;
  /** Discover the issuer and fetch its keys now; rejects with `jwks_unavailable` when they cannot be had (call again to retry). */
  ready(): Promise<void>;
  /** Fetch the key set again and forget cached status lists (e.g. after `keys retire`). */
  refresh(): Promise<void>;
}

export declare const DEFAULTS: Readonly<Required<Omit<VerifierOptions, 'issuer' | 'audience' | 'jwksUri' | 'clock' | 'fetch'>>>;

export declare function createVerifier<Claims extends AccessTokenClaims = AccessTokenClaims>(
  options: VerifierOptions,
): Verifier<Claims>;

// -- middleware ------------------------------------------------------------------------

export interface MiddlewareOptions {
  /** Request paths (without query) served without a token, e.g. ['/healthz']. */
  publicPaths?: string[];
  /** `realm` of the WWW-Authenticate challenge: tab, printable ASCII or Latin-1 (`"` and `\` are dropped); anything else throws a TypeError where the middleware is created. */
  realm?: string;
}

export type AuthenticatedRequest<Claims = AccessTokenClaims> = IncomingMessage & { auth: Claims };

export declare function bearerToken(req: { headers: IncomingMessage['headers'] }): string | null;
export declare function authenticate<Claims extends AccessTokenClaims = AccessTokenClaims>(
  verifier: Pick<Verifier<Claims>, 'verify'>,
  req: { headers: IncomingMessage['headers'] },
): Promise<Claims>;
export declare function sendRefusal(res: ServerResponse, err: InvalidTokenError, options?: { realm?: string }): void;

/** Without public paths, the handler runs only with a token's claims in `req.auth`. */
export declare function requireToken<Claims extends AccessTokenClaims = AccessTokenClaims>(
  verifier: Pick<Verifier<Claims>, 'verify'>,
  handler: (req: AuthenticatedRequest<Claims>, res: ServerResponse) => unknown,
  options?: MiddlewareOptions & { publicPaths?: undefined },
): (req: IncomingMessage, res: ServerResponse) => Promise<unknown>;
/** With public paths, the handler runs for them too, with `req.auth` null. */
export declare function requireToken<Claims extends AccessTokenClaims = AccessTokenClaims>(
  verifier: Pick<Verifier<Claims>, 'verify'>,
  handler: (req: IncomingMessage & { auth: Claims | null }, res: ServerResponse) => unknown,
  options: MiddlewareOptions & { publicPaths: string[] },
): (req: IncomingMessage, res: ServerResponse) => Promise<unknown>;

export declare function expressAuth(
  verifier: Pick<Verifier, 'verify'>,
  options?: MiddlewareOptions,
): (req: any, res: any, next: (err?: unknown) => void) => void;

// -- WebSocket deadlines ---------------------------------------------------------------

/** 4001: the connection's token expired or was refused (revoked, key retired, ...). */
export declare const TOKEN_CLOSE_CODE: 4001;

export declare const MESSAGES: Readonly<{
  expiring: 'token-expiring';
  refresh: 'token-refresh';
  accepted: 'token-accepted';
  rejected: 'token-rejected';
}>;

/** What the helper sends to the client. */
export type DeadlineMessage =
  | { type: 'token-expiring'; expiresAt: number }
  | { type: 'token-accepted'; expiresAt: number }
  | { type: 'token-rejected'; reason: Reason };

/** The part of a `ws` WebSocket the helper uses. */
export interface DeadlineSocket {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  on(event: 'message', listener: (data: any, isBinary: boolean) => void): unknown;
  on(event: 'close', listener: (...args: any[]) => void): unknown;
  off(event: string, listener: (...args: any[]) => void): unknown;
}

export interface DeadlineOptions {
  /** Seconds before `exp` the client gets `{type: "token-expiring", expiresAt}` (default 60). */
  refreshBefore?: number;
  /** Seconds between re-verifications of each open connection's token, which is how a revocation closes it (default 30; 0 disables). */
  recheckInterval?: number;
  /** Close code for an expired or refused token (default 4001). */
  closeCode?: number;
  /** Answer `{type: "token-refresh", token}` messages (default true). */
  handleMessages?: boolean;
  /** Called before a connection is closed for its token; the connection is closed even when it throws (`recheck()` then rejects with what it threw, once the pass has judged every connection). */
  onClose?: (ws: DeadlineSocket, reason: Reason, claims: AccessTokenClaims) => void;
  /** Milliseconds since the epoch (default Date.now). */
  clock?: () => number;
}

export interface TokenDeadlines {
  /** Start tracking an open connection; a socket already closing or closed (`readyState` 2 or 3) is not tracked. */
  track(ws: DeadlineSocket, token: string, claims: AccessTokenClaims): void;
  refresh(ws: DeadlineSocket, token: string): Promise<AccessTokenClaims>;
  untrack(ws: DeadlineSocket): void;
  recheck(): Promise<void>;
  claims(ws: DeadlineSocket): AccessTokenClaims | undefined;
  readonly size: number;
  stop(): void;
}

export declare function createTokenDeadlines(
  verifier: Pick<Verifier, 'verify'>,
  options?: DeadlineOptions,
): TokenDeadlines;

export declare function refuseUpgrade(socket: Duplex, err: InvalidTokenError, options?: { realm?: string }): void;

// -- Token Status List -----------------------------------------------------------------

export declare const STATUS_LIST_TYP: 'statuslist+jwt';
export declare const STATUS_LIST_MEDIA_TYPE: 'application/statuslist+jwt';

export interface StatusList {
  bits: 1 | 2 | 4 | 8;
  bytes: Uint8Array;
}
export declare function decodeStatusList(statusList: unknown): StatusList;
export declare function readStatus(list: StatusList, idx: number): number | null;
export declare function statusReference(claims: Record<string, unknown>): { idx: number; uri: string } | null;
