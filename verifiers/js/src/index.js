// authserver-verifier: verify authserver access tokens offline in Node sync servers.

export { createVerifier, DEFAULTS } from './verifier.js';
export { InvalidTokenError, REASONS } from './errors.js';
export { authenticate, bearerToken, expressAuth, requireToken, sendRefusal } from './middleware.js';
export { createTokenDeadlines, refuseUpgrade, MESSAGES, TOKEN_CLOSE_CODE } from './websocket.js';
export {
  decodeStatusList,
  readStatus,
  statusReference,
  STATUS_LIST_MEDIA_TYPE,
  STATUS_LIST_TYP,
} from './statuslist.js';
