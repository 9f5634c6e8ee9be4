// The long-lived shim process: subreaper of its containers, ttrpc server on the group socket, publisher of
// events. Started by `start` with the socket path; reports readiness on stdout, which `start` waits for.
//
// Readiness is reported as soon as the socket listens, before the heavy modules (protobuf code, logger,
// Task service) load: containerd's connection waits in the backlog meanwhile, so `start` returns
// sooner and loading overlaps with containerd's own work between `start` and Create.
import * as fs from 'node:fs';
import * as net from 'node:net';
import { peerCredentials } from '../native';
import { reaper } from '../native/reaper';
import { READY_EXISTING, READY_LISTENING, bindGroupSocket } from './daemon-socket';
import type { ShimFlags } from './flags';

function tellStart(line: string): void {
  try {
    fs.writeSync(1, `${line}\n`);
  } catch {
    // `start` went away: it will have failed already
  }
}

/**
 * Only root or our own user may talk to the shim (the socket is 0600 in a 0700 directory already; this
 * is the second lock, as containerd's own shims check SO_PEERCRED).
 */
function sameUser(sock: net.Socket): boolean {
  const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (fd === undefined || fd < 0) return false;
  try {
    const { uid } = peerCredentials(fd);
    return uid === 0 || uid === process.getuid?.();
  } catch {
    return false;
  }
}

export async function runDaemon(flags: ShimFlags): Promise<void> {
  if (!flags.socket) throw new Error('the shim daemon needs -socket (it is started by `start`)');
  const bundle = process.cwd();
  const early: net.Socket[] = [];
  let accept = (sock: net.Socket) => { early.push(sock); };
  const listener = net.createServer((sock) => { if (sameUser(sock)) accept(sock); else sock.destroy(); });
  const bound = await bindGroupSocket(flags.socket, listener);
  if (!bound) {
    // Another daemon of this group won the race; `start` reports its address.
    tellStart(READY_EXISTING);
    process.exit(0);
  }
  reaper.start();
  tellStart(READY_LISTENING);
  // Nothing more goes to stdout: it is the readiness pipe, and `start` has exited.
  fs.closeSync(1);
  fs.openSync('/dev/null', 'w');

  const { serveShim } = await import('./server');
  const server = serveShim(flags, bundle);
  accept = (sock) => server.handleConnection(sock);
  for (const sock of early.splice(0)) accept(sock);
  // The daemon outlives the bundle it was started in; stay out of it.
  process.chdir('/');
}
