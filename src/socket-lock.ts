// Binding a unix socket that another process of the same kind may be binding at the same moment (the
// shim's group daemons, the node agent): "probe, remove a stale socket, bind" runs under a short-lived
// lock directory, so a live server's socket is never unlinked by a second one that wrongly thinks it
// stale. A lock older than LOCK_STALE_MS belongs to a process that died holding it and is broken.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { KybernateError } from './errors';

const LOCK_WAIT_MS = 5_000;
const LOCK_STALE_MS = 10_000;
const PROBE_TIMEOUT_MS = 500;

/** True when something accepts connections on the socket. */
export function canConnect(sock: string, timeoutMs = PROBE_TIMEOUT_MS): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(sock);
    const finish = (ok: boolean): void => { clearTimeout(t); c.destroy(); resolve(ok); };
    const t = setTimeout(() => finish(false), timeoutMs);
    c.once('connect', () => finish(true));
    c.once('error', () => finish(false));
  });
}

/**
 * Runs `fn` holding the lock directory `lockDir` (created 0700, removed afterwards). Waits up to
 * LOCK_WAIT_MS for another holder; then KYB_ERR_UNAVAILABLE, its message ending in `hint`.
 */
export async function withSocketLock<T>(lockDir: string, fn: () => Promise<T>, hint = ''): Promise<T> {
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      fs.mkdirSync(lockDir, { mode: 0o700 });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const age = Date.now() - (fs.statSync(lockDir, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
      if (age > LOCK_STALE_MS) fs.rmSync(lockDir, { recursive: true, force: true });
      else if (Date.now() > deadline) throw new KybernateError('KYB_ERR_UNAVAILABLE', `timed out waiting for ${lockDir}${hint}`);
      else await new Promise((r) => setTimeout(r, 20));
    }
  }
  try {
    return await fn();
  } finally {
    fs.rmSync(lockDir, { recursive: true, force: true });
  }
}

/**
 * Binds a daemon's root-only unix socket (the agent's API, the activator's admin socket): its directory, when
 * created here, is 0700 and the socket 0600 from the moment bind() creates it (umask), so only root can
 * connect. Under the lock: a live server's socket is refused (KYB_ERR_ALREADY_EXISTS, naming `who` and the
 * `flag` that picks another), a stale one (its server died) is replaced, anything else there is refused.
 */
export async function bindRootOnlySocket(socket: string, who: string, flag: string, bind: () => Promise<void>): Promise<void> {
  fs.mkdirSync(path.dirname(socket), { recursive: true, mode: 0o700 });
  await withSocketLock(`${socket}.lock`, async () => {
    const st = fs.lstatSync(socket, { throwIfNoEntry: false });
    if (st !== undefined) {
      if (!st.isSocket()) throw new KybernateError('KYB_ERR_ALREADY_EXISTS', `${socket} exists and is not a socket: remove it or choose another ${flag}`);
      if (await canConnect(socket)) {
        throw new KybernateError('KYB_ERR_ALREADY_EXISTS', `another ${who} is listening at ${socket}: stop it first, or give this one another ${flag}`);
      }
      fs.rmSync(socket, { force: true }); // stale: its server died without removing it
    }
    const old = process.umask(0o177);
    try {
      await bind();
    } finally {
      process.umask(old);
    }
    fs.chmodSync(socket, 0o600);
  }, ` (another ${who} starting?)`);
}
