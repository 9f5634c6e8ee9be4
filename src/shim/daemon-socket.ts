// The daemon binds its group's socket itself. Two `start`s of the same group may race (CRI creates a pod's
// containers concurrently); src/socket-lock.ts serialises "probe, remove stale, bind" so that a live
// daemon's socket is never unlinked by a second daemon that wrongly thinks it stale.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { peerCredentials } from '../native';
import { canConnect, withSocketLock } from '../socket-lock';

export { canConnect } from '../socket-lock';

/** Lines the daemon writes on its readiness pipe for `start`. */
export const READY_LISTENING = 'listening';
export const READY_EXISTING = 'exists';

/** Listens on `sock`, created 0600 from the first instant (umask around bind). */
export function listen(server: net.Server, sock: string): Promise<void> {
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

/**
 * Only root or our own user may talk to the shim (the socket is 0600 in a 0700 directory already; this
 * is the second lock, as containerd's own shims check SO_PEERCRED).
 */
export function sameUser(sock: net.Socket): boolean {
  const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (fd === undefined || fd < 0) return false;
  try {
    const { uid } = peerCredentials(fd);
    return uid === 0 || uid === process.getuid?.();
  } catch {
    return false;
  }
}

/**
 * A group socket's server that holds connections from the moment it listens until serve() names their
 * handler: containerd may connect as soon as the socket exists, before the Task service is wired.
 */
export class GroupListener {
  readonly server: net.Server;
  private early: net.Socket[] | null = [];
  private handler: ((sock: net.Socket) => void) | null = null;

  constructor() {
    this.server = net.createServer((sock) => {
      if (!sameUser(sock)) sock.destroy();
      else if (this.handler) this.handler(sock);
      else this.early!.push(sock);
    });
  }

  serve(handler: (sock: net.Socket) => void): void {
    this.handler = handler;
    for (const sock of this.early!.splice(0)) handler(sock);
    this.early = null;
  }
}
