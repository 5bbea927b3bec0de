// Token deadlines for long-lived WebSocket connections.
//
// A token is checked once, at the upgrade; a connection then outlives it. This helper keeps
// each connection's token deadline: it tells the client to fetch a fresh token before the
// current one expires, accepts that fresh token on the open connection, re-checks the
// token's status list while the connection is open, and closes the connection when its
// token expired or was revoked.

import { InvalidTokenError } from './errors.js';
import { refusal } from './middleware.js';

/** Close code for "your token expired or was refused" (private-use range, RFC 6455 §7.4.2). */
export const TOKEN_CLOSE_CODE = 4001;

const DEFAULTS = {
  refreshBefore: 60, // seconds before exp the client is told to refresh
  recheckInterval: 30, // seconds between status re-checks of each open connection
  closeCode: TOKEN_CLOSE_CODE,
  handleMessages: true,
};

/**
 * @param {{verify(token: string): Promise<Record<string, any>>}} verifier
 * @param {object} [options] see types/index.d.ts (`DeadlineOptions`)
 */
export function createTokenDeadlines(verifier, options = {}) {
  const config = { ...DEFAULTS, ...options };
  const now = config.clock ?? Date.now;
  /** @type {Map<object, {token: string, claims: object, timers: Set<any>, handler?: Function}>} */
  const connections = new Map();

  function send(ws, message) {
    if (ws.readyState === 1) ws.send(JSON.stringify(message));
  }

  function close(ws, reason) {
    const state = connections.get(ws);
    if (!state) return;
    untrack(ws);
    try {
      config.onClose?.(ws, reason, state.claims);
    } finally {
      // Closed whatever onClose did: untracked, a connection left open here kept its
      // expired or revoked token for good.
      // The close reason is at most 123 bytes (RFC 6455 §5.5); a reason name always fits.
      if (ws.readyState <= 1) ws.close(config.closeCode, reason);
    }
  }

  // setTimeout takes at most 2^31 - 1 ms (about 24.8 days); a longer delay fires at once.
  const MAX_DELAY_MS = 2 ** 31 - 1;

  /** Call fn at the absolute time atMs (epoch ms), in hops no longer than setTimeout takes. */
  function at(state, atMs, fn) {
    const wait = Math.max(0, atMs - now());
    const timer = setTimeout(
      () => {
        state.timers.delete(timer);
        if (wait > MAX_DELAY_MS) at(state, atMs, fn);
        else fn();
      },
      Math.min(wait, MAX_DELAY_MS),
    );
    timer.unref?.();
    state.timers.add(timer);
  }

  function schedule(ws, state) {
    for (const timer of state.timers ?? []) clearTimeout(timer);
    state.timers = new Set();
    const expMs = state.claims.exp * 1000;
    // "token-expiring" once per token, refreshBefore seconds ahead of its exp; a token that
    // arrives already inside that window (its lifetime is shorter) is told halfway through
    // what is left of it: told at once, a client refreshing at once got another such token
    // and was told again, in a loop of token requests.
    const leftMs = expMs - now();
    const noticeMs =
      leftMs > config.refreshBefore * 1000
        ? expMs - config.refreshBefore * 1000
        : now() + leftMs / 2;
    at(state, noticeMs, () =>
      send(ws, { type: 'token-expiring', expiresAt: state.claims.exp }),
    );
    at(state, expMs, () => close(ws, 'expired'));
  }

  let rechecking = null;
  /** Re-verify every tracked connection's token; one pass at a time. */
  function recheck() {
    rechecking ??= recheckAll().finally(() => {
      rechecking = null;
    });
    return rechecking;
  }
  async function recheckAll() {
    let failure = null;
    for (const [ws, state] of [...connections]) {
      const token = state.token;
      try {
        await verifier.verify(token);
      } catch (err) {
        // A fresh token may have replaced this one meanwhile; judge only the current one.
        try {
          if (connections.get(ws)?.token === token) close(ws, reasonOf(err));
        } catch (thrown) {
          // onClose threw: the other connections are still judged in this pass.
          failure ??= { thrown };
        }
      }
    }
    if (failure) throw failure.thrown;
  }
  let recheckTimer = null;
  function ensureRecheck() {
    if (recheckTimer || !(config.recheckInterval > 0)) return;
    recheckTimer = setInterval(() => {
      recheck().catch(() => {});
    }, config.recheckInterval * 1000);
    recheckTimer.unref?.();
  }

  function untrack(ws) {
    const state = connections.get(ws);
    if (!state) return;
    for (const timer of state.timers) clearTimeout(timer);
    if (state.handler) ws.off?.('message', state.handler);
    ws.off?.('close', state.onSocketClose);
    connections.delete(ws);
    if (connections.size === 0 && recheckTimer) {
      clearInterval(recheckTimer);
      recheckTimer = null;
    }
  }

  /**
   * Replace the connection's token with a fresh one. It must verify and be for the same
   * `sub` (and `client_id`): a connection does not change hands.
   */
  async function refresh(ws, token) {
    const state = connections.get(ws);
    if (!state) throw new InvalidTokenError('missing_token', 'connection is not tracked');
    const claims = await verifier.verify(token);
    if (claims.sub !== state.claims.sub || claims.client_id !== state.claims.client_id) {
      throw new InvalidTokenError('wrong_subject');
    }
    if (connections.get(ws) !== state) throw new InvalidTokenError('expired', 'connection closed meanwhile');
    state.token = token;
    state.claims = claims;
    schedule(ws, state);
    return claims;
  }

  return {
    /**
     * Start tracking a connection whose token (already verified, e.g. at the upgrade) gave
     * `claims`. With `handleMessages`, text messages `{"type":"token-refresh","token":...}`
     * are answered `{"type":"token-accepted","expiresAt"}` or
     * `{"type":"token-rejected","reason"}`. The socket's other `message` listeners (the
     * application's) receive them too, token included: skip `type: "token-refresh"` there,
     * and never log or relay it.
     */
    track(ws, token, claims) {
      untrack(ws);
      // A socket that closed while its token was verified (a token sent in the first
      // message) emits no more 'close': tracked, it stayed in the map with its timers and
      // was re-verified at every interval until its token's exp.
      if (ws.readyState > 1) return;
      const state = { token, claims, timers: new Set() };
      state.onSocketClose = () => untrack(ws);
      ws.on('close', state.onSocketClose);
      if (config.handleMessages) {
        state.handler = (data, isBinary) => {
          if (isBinary) return;
          let message;
          try {
            message = JSON.parse(data.toString());
          } catch {
            return;
          }
          if (message?.type !== 'token-refresh') return;
          refresh(ws, String(message.token ?? '')).then(
            (fresh) => send(ws, { type: 'token-accepted', expiresAt: fresh.exp }),
            (err) => send(ws, { type: 'token-rejected', reason: reasonOf(err) }),
          );
        };
        ws.on('message', state.handler);
      }
      connections.set(ws, state);
      schedule(ws, state);
      ensureRecheck();
    },
    refresh,
    untrack,
    /** Re-verify every open connection's token now (what the interval timer does). */
    recheck,
    /** The claims of a tracked connection's current token. */
    claims(ws) {
      return connections.get(ws)?.claims;
    },
    get size() {
      return connections.size;
    },
    /** Stop every timer; connections stay open and are no longer tracked. */
    stop() {
      for (const ws of [...connections.keys()]) untrack(ws);
    },
  };
}

/**
 * Refuse a WebSocket upgrade over the raw socket Node hands to an `upgrade` listener: the
 * same 400/401/503 answer as the HTTP middleware's `sendRefusal` (its challenge with the
 * optional realm, `Cache-Control: no-store`), then the socket is closed.
 *
 * @param {import('node:stream').Duplex} socket
 * @param {InvalidTokenError} err
 * @param {{ realm?: string }} [options]
 */
export function refuseUpgrade(socket, err, { realm } = {}) {
  let answer;
  try {
    answer = refusal(err, realm);
  } catch (thrown) {
    socket.destroy(); // a realm that cannot be sent is the caller's bug: no connection left open
    throw thrown;
  }
  const { headers, body } = answer;
  const text = JSON.stringify(body);
  const lines = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join('');
  if (socket.writable) {
    // The head in Latin-1, as Node's http module sends header values (a realm may hold
    // Latin-1 characters); the JSON body in UTF-8.
    const head =
      `HTTP/1.1 ${err.status} ${STATUS_TEXT[err.status]}\r\n${lines}Content-Type: application/json\r\n` +
      `Cache-Control: no-store\r\nContent-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n`;
    socket.end(Buffer.concat([Buffer.from(head, 'latin1'), Buffer.from(text, 'utf8')]));
  }
  socket.destroySoon?.();
}

const STATUS_TEXT = { 400: 'Bad Request', 401: 'Unauthorized', 503: 'Service Unavailable' };

/** Message type constants of the protocol above. */
export const MESSAGES = Object.freeze({
  expiring: 'token-expiring',
  refresh: 'token-refresh',
  accepted: 'token-accepted',
  rejected: 'token-rejected',
});

function reasonOf(err) {
  return err instanceof InvalidTokenError ? err.reason : 'malformed';
}
