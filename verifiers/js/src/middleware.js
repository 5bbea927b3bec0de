// RFC 6750 bearer-token middleware for Node's http server and for Express.

import { InvalidTokenError } from './errors.js';

/**
 * The bearer token of a request (RFC 6750 §2.1: `Authorization: Bearer <token>`, the scheme
 * case-insensitive), or null when the request has no bearer credentials (no Authorization
 * header, or another scheme such as Basic). `Bearer` with no value or with spaces inside it
 * throws InvalidTokenError `invalid_request` (a malformed request, §3.1). A value of any other
 * characters is returned (the verifier then refuses it as malformed), as the Python package
 * reads the header.
 *
 * @param {{headers: Record<string, string | string[] | undefined>}} req
 */
export function bearerToken(req) {
  const header = req.headers?.authorization;
  if (typeof header !== 'string') return null;
  const trimmed = header.trim();
  const space = trimmed.indexOf(' ');
  const scheme = space < 0 ? trimmed : trimmed.slice(0, space);
  if (scheme.toLowerCase() !== 'bearer') return null;
  const value = space < 0 ? '' : trimmed.slice(space + 1).trim();
  if (!value || /\s/.test(value)) throw new InvalidTokenError('invalid_request');
  return value;
}

/** How many Authorization headers a request sent (Node keeps only the first in `headers`). */
function authorizationHeaders(req) {
  const raw = req.rawHeaders;
  if (!Array.isArray(raw)) return typeof req.headers?.authorization === 'string' ? 1 : 0;
  let count = 0;
  for (let i = 0; i < raw.length; i += 2) if (String(raw[i]).toLowerCase() === 'authorization') count += 1;
  return count;
}

/**
 * Verify the request's bearer token. Resolves to the claims; rejects with InvalidTokenError:
 * `missing_token` when the request has no bearer credentials, `invalid_request` when its
 * Authorization header is malformed or sent more than once (Node keeps the first, and a proxy
 * in front might have read the other; RFC 6750 §3.1 "repeats the same parameter").
 */
export async function authenticate(verifier, req) {
  if (authorizationHeaders(req) > 1) {
    throw new InvalidTokenError('invalid_request', 'more than one Authorization header');
  }
  const token = bearerToken(req);
  if (token === null) {
    throw new InvalidTokenError('missing_token', req.headers?.authorization ? 'not a Bearer authorization' : undefined);
  }
  const release = guardSocket(req.socket);
  try {
    return await verifier.verify(token);
  } finally {
    release();
  }
}

/**
 * Keep a socket that nobody listens to for errors from crashing the process while its
 * request waits: Node's http server drops its own `error` listener from the socket it hands
 * to an `upgrade` listener, so a client that resets the connection while its token is
 * verified (a key or status list fetch) raised an uncaught ECONNRESET. The socket is
 * destroyed on an error, as the ws package does during its handshake. Returns the function
 * that removes the listener again.
 *
 * @param {import('node:stream').Duplex | undefined} socket
 * @returns {() => void}
 */
export function guardSocket(socket) {
  if (typeof socket?.on !== 'function' || typeof socket.listenerCount !== 'function') return () => {};
  if (socket.listenerCount('error') > 0) return () => {};
  const onError = () => socket.destroy();
  socket.on('error', onError);
  return () => socket.off('error', onError);
}

/**
 * Answer a refused request: 401 with the RFC 6750 §3 challenge, 400 `invalid_request` for a
 * malformed or repeated Authorization header (§3.1), or 503 when the verifier could
 * not decide (keys or status list unavailable: not the token's fault, so no challenge that
 * makes the client throw its token away). The body is JSON `{error, reason}`.
 *
 * @param {import('node:http').ServerResponse} res
 * @param {InvalidTokenError} err
 */
export function sendRefusal(res, err, { realm } = {}) {
  const { headers, body } = refusal(err, realm);
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(err.status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', ...headers });
  res.end(JSON.stringify(body));
}

/**
 * The answer to a refused request, as headers and a JSON body (its status is `err.status`):
 * what `sendRefusal` and the WebSocket helper's `refuseUpgrade` send.
 *
 * @param {InvalidTokenError} err
 * @param {string} [realm]
 * @returns {{headers: Record<string, string>, body: {error: string, reason: string}}}
 */
export function refusal(err, realm) {
  const realmPart = checkedRealm(realm) ? `realm="${realm.replace(/["\\]/g, '')}"` : '';
  if (err.unavailable) {
    return { headers: { 'Retry-After': '5' }, body: { error: 'temporarily_unavailable', reason: err.reason } };
  }
  if (err.reason === 'invalid_request') {
    // §3.1: a malformed request is 400 invalid_request.
    const params = [realmPart, 'error="invalid_request"'].filter(Boolean);
    return { headers: { 'WWW-Authenticate': `Bearer ${params.join(', ')}` }, body: { error: 'invalid_request', reason: err.reason } };
  }
  if (err.reason === 'missing_token') {
    // §3.1: a request without authentication information gets no error code.
    return {
      headers: { 'WWW-Authenticate': ['Bearer', realmPart].filter(Boolean).join(' ') },
      body: { error: 'invalid_token', reason: err.reason }, // as the Python middleware says
    };
  }
  const params = [realmPart, 'error="invalid_token"', `error_description="${err.reason}"`].filter(Boolean);
  return { headers: { 'WWW-Authenticate': `Bearer ${params.join(', ')}` }, body: { error: 'invalid_token', reason: err.reason } };
}

/**
 * The realm, when it is one a header can carry (RFC 9110 §5.5: tab, visible ASCII, space,
 * obs-text); `"` and `\` are dropped from it where it is sent. Anything else (a line break,
 * a character beyond Latin-1) throws a TypeError, where requireToken and expressAuth are
 * created: Node's writeHead refused it (ERR_INVALID_CHAR) at the first refused request,
 * inside the middleware's promise, and the unhandled rejection ended the process.
 *
 * @param {string | undefined} realm
 */
function checkedRealm(realm) {
  if (realm === undefined || realm === null) return realm;
  if (typeof realm !== 'string' || !/^[\t\x20-\x7e\x80-\xff]*$/.test(realm)) {
    throw new TypeError('realm must be a string of tab, printable ASCII or Latin-1 characters (it goes into WWW-Authenticate)');
  }
  return realm;
}

function isPublic(req, publicPaths) {
  if (!publicPaths?.length) return false;
  const path = (req.url ?? '').split('?', 1)[0];
  return publicPaths.includes(path);
}

/**
 * Wrap a Node `http` request handler: it runs for requests with a valid token, with the
 * claims in `req.auth`, and for the `publicPaths`, with `req.auth` null; everything else is
 * answered by `sendRefusal`.
 *
 *     http.createServer(requireToken(verifier, (req, res) => res.end(req.auth.sub)))
 *
 * @param {{verify(token: string): Promise<object>}} verifier
 * @param {(req: any, res: any) => unknown} handler
 * @param {{publicPaths?: string[], realm?: string}} [options]
 */
export function requireToken(verifier, handler, options = {}) {
  checkedRealm(options.realm);
  return async (req, res) => {
    if (isPublic(req, options.publicPaths)) {
      // No token was asked for: null, not a leftover or a forged value.
      req.auth = null;
    } else {
      try {
        req.auth = await authenticate(verifier, req);
      } catch (err) {
        sendRefusal(res, asInvalidToken(err), options);
        return;
      }
    }
    return handler(req, res);
  };
}

/**
 * Express (4 or 5) middleware: `app.use(expressAuth(verifier))`. A valid token sets
 * `req.auth` to its claims and calls `next()`; a refused one is answered here (400/401/503);
 * on the `publicPaths`, `req.auth` is null.
 *
 * @param {{verify(token: string): Promise<object>}} verifier
 * @param {{publicPaths?: string[], realm?: string}} [options]
 */
export function expressAuth(verifier, options = {}) {
  checkedRealm(options.realm);
  return (req, res, next) => {
    if (isPublic(req, options.publicPaths)) {
      // As requireToken does: no claims on a public path, whatever an earlier middleware
      // (or a client-controlled one) left in req.auth.
      req.auth = null;
      return next();
    }
    authenticate(verifier, req).then(
      (claims) => {
        req.auth = claims;
        next();
      },
      (err) => sendRefusal(res, asInvalidToken(err), options),
    );
  };
}

function asInvalidToken(err) {
  return err instanceof InvalidTokenError ? err : new InvalidTokenError('malformed', undefined, { cause: err });
}
