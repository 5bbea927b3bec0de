// A real `authserver serve` process for the tests: SQLite in a temp dir, a free loopback
// port, clients created through the CLI. AUTHSERVER_BIN names the binary (default: the
// repository's .venv/bin/authserver).

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync, openSync, closeSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');
export const AUTHSERVER_BIN = process.env.AUTHSERVER_BIN || path.join(REPO, '.venv/bin/authserver');

// Below the kernel's ephemeral range (32768-60999 by default), which every connection's
// source port and every listen on port 0 draw from: a port found there is free only until
// the kernel hands it out again, and a server that starts slowly can find it taken.
const PORT_RANGE = [20000, 32767];

function tryListen(port) {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

export async function freePort() {
  const [low, high] = PORT_RANGE;
  for (let attempt = 0; attempt < 200; attempt += 1) {
    const port = low + Math.floor(Math.random() * (high - low + 1));
    if (await tryListen(port)) return port;
  }
  throw new Error(`no free loopback port in ${low}-${high}`);
}

function cleanEnv(extra) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('AUTHSERVER_')));
  return { ...env, ...extra };
}

/** The audience tokens are requested for unless a test names another. */
export const DEFAULT_AUDIENCE = 'https://sync.example.com';

let shared = null;
/** Every server this process started and has not stopped: killed if the process ends. */
const running = new Set();
process.once('exit', () => {
  for (const server of running) server.kill();
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    for (const server of running) server.kill();
    process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
  });
}

/**
 * One `authserver serve` with default settings for every test file of this process (the
 * suite runs them all in one process: test/suite.js). Stopped when the process exits.
 */
export function sharedAuthserver() {
  shared ??= startAuthserver().then((server) => {
    // Nothing else stops it: it must not keep this process alive, and dies with it.
    server.unref();
    // One client for every file (each `clients create` is a CLI start): both test
    // audiences, and the extra claims the tests send (Verdant's lib/url/type/role).
    server.client = server.createClient(
      '--name', 'js tests',
      '--audience', DEFAULT_AUDIENCE, '--audience', 'https://other.example.com',
      ...['libraryId', 'lib', 'url', 'type', 'role'].flatMap((claim) => ['--allowed-claim', claim]),
    );
    return server;
  });
  return shared;
}

/**
 * Start `authserver serve`. `settings` are extra AUTHSERVER_* variables (e.g. shrunk key
 * timings); `issuerPath` ('/auth') makes the issuer the server's URL with that path.
 * Returns a handle; call `stop()` in an `after` hook.
 */
export async function startAuthserver({ settings = {}, workers = 1, issuerPath = '' } = {}) {
  if (!existsSync(AUTHSERVER_BIN)) {
    throw new Error(`authserver binary not found at ${AUTHSERVER_BIN}: set AUTHSERVER_BIN`);
  }
  const dir = mkdtempSync(path.join(tmpdir(), 'authserver-js-'));
  const port = await freePort();
  const baseUrl = `http://127.0.0.1:${port}`;
  const env = cleanEnv({
    AUTHSERVER_DATABASE_URL: `sqlite:///${path.join(dir, 'authserver.db')}`,
    AUTHSERVER_KEYS_DIR: path.join(dir, 'keys'),
    AUTHSERVER_ISSUER: baseUrl + issuerPath,
    ...settings,
  });
  const logPath = path.join(dir, 'server.log');
  let child = null;

  async function start() {
    const log = openSync(logPath, 'a');
    child = spawn(AUTHSERVER_BIN, ['serve', '--host', '127.0.0.1', '--port', String(port), '--workers', String(workers)], {
      env,
      stdio: ['ignore', log, log],
      detached: true, // its own process group, stopped by its PID
    });
    closeSync(log);
    const exited = new Promise((resolve) => child.once('exit', resolve));
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r(undefined), 100))]);
      if (code !== undefined) throw new Error(`authserver serve exited (${code}):\n${readFileSync(logPath, 'utf8')}`);
      try {
        const response = await fetch(`${baseUrl}/readyz`, { signal: AbortSignal.timeout(2000) });
        if (response.status === 200) return;
      } catch {
        // not listening yet
      }
    }
    await stop();
    throw new Error('authserver serve did not become ready in 30 s');
  }

  async function stop() {
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    try {
      process.kill(-child.pid, 'SIGTERM');
    } catch {
      return;
    }
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }, 15_000);
    await exited;
    clearTimeout(timer);
  }

  function cli(...args) {
    const result = spawnSync(AUTHSERVER_BIN, args, { env, encoding: 'utf8', timeout: 60_000 });
    if (result.status !== 0) {
      throw new Error(`authserver ${args.join(' ')} exited ${result.status}: ${result.stderr}`);
    }
    return result.stdout;
  }

  /** `cli` without blocking the event loop (traffic keeps flowing while it runs). */
  function cliAsync(...args) {
    return new Promise((resolve, reject) => {
      const child = spawn(AUTHSERVER_BIN, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.on('error', reject);
      child.on('exit', (code) =>
        code === 0 ? resolve(stdout) : reject(new Error(`authserver ${args.join(' ')} exited ${code}: ${stderr}`)),
      );
    });
  }

  await start();
  const handle = {
    unref() {
      child?.unref();
    },
    /** Synchronous stop for process exit: SIGKILL the group, remove the temp dir. */
    kill() {
      try {
        if (child && child.exitCode === null) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // gone
      }
      rmSync(dir, { recursive: true, force: true });
    },
    baseUrl,
    issuer: baseUrl + issuerPath,
    env,
    logPath,
    start,
    stop,
    async close() {
      running.delete(handle);
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
    cli,
    cliJson: (...args) => JSON.parse(cli(...args, '--json')),
    cliJsonAsync: async (...args) => JSON.parse(await cliAsync(...args, '--json')),
    /** `clients create ... --json` → {client_id, client_secret, ...}. */
    createClient(...args) {
      return JSON.parse(cli('clients', 'create', ...args, '--json'));
    },
    /**
     * POST /token (client_secret_basic); `params` are form fields, `audience` defaulting
     * to DEFAULT_AUDIENCE. Resolves to the JWT.
     */
    async token(client, params = {}) {
      const body = new URLSearchParams({ grant_type: 'client_credentials', audience: DEFAULT_AUDIENCE, ...params });
      const response = await fetch(`${baseUrl}/token`, {
        method: 'POST',
        body,
        headers: {
          authorization: 'Basic ' + Buffer.from(`${encodeURIComponent(client.client_id)}:${encodeURIComponent(client.client_secret)}`).toString('base64'),
        },
      });
      const json = await response.json();
      if (response.status !== 200) throw new Error(`POST /token: ${response.status} ${JSON.stringify(json)}`);
      return json.access_token;
    },
  };
  running.add(handle);
  return handle;
}

/** `real`, slowed by `delayMs` before each verification, counting them in `calls`: for the
 * tests that act while a verification is in flight (a reset during an upgrade's check). */
export function slowVerifier(real, delayMs = 150) {
  const slow = {
    calls: 0,
    async verify(token) {
      slow.calls += 1;
      await new Promise((r) => setTimeout(r, delayMs));
      return real.verify(token);
    },
  };
  return slow;
}
