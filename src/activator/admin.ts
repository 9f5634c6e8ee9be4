// The activator's admin socket: GET /status as JSON (activator-api/status.ts), for `kybernate activator
// status`. Root only, as the agent's socket: its directory, when created here, is 0700 and the socket 0600
// from bind() on (umask); a live activator's socket is never taken over (probe and bind under a lock).
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { ActivatorStatus } from '../activator-api/status';
import { bindRootOnlySocket } from '../socket-lock';

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
  await bindRootOnlySocket(socket, 'kybernate-activator', '--admin', () => new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socket, () => { server.off('error', reject); resolve(); });
  }));
  return {
    socket,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
      fs.rmSync(socket, { force: true });
    }),
  };
}
