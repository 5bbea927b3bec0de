// The whole suite in one process, so the test files share one `authserver serve`
// (helpers/authserver.js sharedAuthserver): `node --test test/suite.js`. Each file also
// runs alone: `node --test test/verifier.test.js`.

import './statuslist.test.js';
import './alignment.test.js';
import './status.test.js';
import './verifier.test.js';
import './middleware.test.js';
import './websocket.test.js';
import './revocation.test.js';
import './verdant.test.js';
import './clients.test.js';
import './issuer-path.test.js';
import './rotation.test.js';
import './types.test.js';
import './clock-steps.test.js';
