// The daemon binds its group's socket itself. Two `start`s of the same group may race (CRI creates a pod's
// containers concurrently); src/socket-lock.ts serialises "probe, remove stale, bind" so that a live
// daemon's socket is never unlinked by a second daemon that wrongly thinks it stale.
import * as fs from 'node:fs';
import type * as net from 'node:net';
import * as path from 'node:path';
import { canConnect, withSocketLock } from '../socket-lock';

export { canConnect } from '../socket-lock';

/** Lines the daemon writes on its readiness pipe for `start`. */
export const READY_LISTENING = 'listening';
export const READY_EXISTING = 'exists';

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
  return withSocketLock(`${sock}.lock`, async () => {
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
