// The activator's admin socket: GET /status as JSON (activator-api/status.ts), for `kybernate activator
// status`. Root only, as the agent's socket: its directory, when created here, is 0700 and the socket 0600
// from bind() on (umask); a live activator's socket is never taken over (probe and bind under a lock).
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { ActivatorStatus } from '../activator-api/status';
import { KybernateError } from '../errors';
import { canConnect, withSocketLock } from '../socket-lock';

export interface AdminServer {
  socket: string;
  close(): Promise<void>;
}

export async function listenAdmin(socketPath: string, status: () => ActivatorStatus): Promise<AdminServer> {
  const socket = path.resolve(socketPath);
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || req.url?.split('?')[0] !== '/status') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: GET /status\n');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(`${JSON.stringify(status())}\n`);
  });
  fs.mkdirSync(path.dirname(socket), { recursive: true, mode: 0o700 });
  await withSocketLock(`${socket}.lock`, async () => {
    const st = fs.lstatSync(socket, { throwIfNoEntry: false });
    if (st !== undefined) {
      if (!st.isSocket()) throw new KybernateError('KYB_ERR_ALREADY_EXISTS', `${socket} exists and is not a socket: remove it or choose another --admin`);
      if (await canConnect(socket)) {
        throw new KybernateError('KYB_ERR_ALREADY_EXISTS', `another kybernate-activator is listening at ${socket}: stop it first, or give this one another --admin`);
      }
      fs.rmSync(socket, { force: true }); // stale: its activator died without removing it
    }
    const old = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(socket, () => { server.off('error', reject); resolve(); });
      });
    } finally {
      process.umask(old);
    }
    fs.chmodSync(socket, 0o600);
  }, ' (another activator starting?)');
  return {
    socket,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
      fs.rmSync(socket, { force: true });
    }),
  };
}
