// The daemon binds its group's socket itself. Two `start`s of the same group may race (CRI creates a pod's
// containers concurrently); a short-lived lock directory serialises "probe, remove stale, bind" so that a
// live daemon's socket is never unlinked by a second daemon that wrongly thinks it stale.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';

/** Lines the daemon writes on its readiness pipe for `start`. */
export const READY_LISTENING = 'listening';
export const READY_EXISTING = 'exists';

const LOCK_WAIT_MS = 5_000;
const LOCK_STALE_MS = 10_000;
const PROBE_TIMEOUT_MS = 500;

/** True when something accepts connections on the socket. */
export function canConnect(sock: string, timeoutMs = PROBE_TIMEOUT_MS): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(sock);
    const finish = (ok: boolean) => { clearTimeout(t); c.destroy(); resolve(ok); };
    const t = setTimeout(() => finish(false), timeoutMs);
    c.once('connect', () => finish(true));
    c.once('error', () => finish(false));
  });
}

async function withLock<T>(lockDir: string, fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      fs.mkdirSync(lockDir, { mode: 0o700 });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const age = Date.now() - (fs.statSync(lockDir, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
      if (age > LOCK_STALE_MS) fs.rmSync(lockDir, { recursive: true, force: true });
      else if (Date.now() > deadline) throw new Error(`timed out waiting for ${lockDir}`);
      else await new Promise((r) => setTimeout(r, 20));
    }
  }
  try {
    return await fn();
  } finally {
    fs.rmSync(lockDir, { recursive: true, force: true });
  }
}

function listen(server: net.Server, sock: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once('error', onError);
    // The socket file is created by bind(): a restrictive umask makes it 0600 from the first instant.
    const old = process.umask(0o177);
    server.listen(sock, () => {
      process.umask(old);
      server.off('error', onError);
      resolve();
    });
    process.umask(old);
  });
}

/**
 * Binds the group socket. Resolves with the listening server, or null when a live daemon of the same group
 * already serves it (then this daemon must exit and `start` reports the existing address).
 */
export async function bindGroupSocket(sock: string, server: net.Server): Promise<net.Server | null> {
  fs.mkdirSync(path.dirname(sock), { recursive: true, mode: 0o700 });
  return withLock(`${sock}.lock`, async () => {
    try {
      await listen(server, sock);
      return server;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    }
    if (await canConnect(sock)) return null;
    fs.rmSync(sock, { force: true }); // stale: its daemon died without cleaning up
    await listen(server, sock);
    return server;
  });
}
