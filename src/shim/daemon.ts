// The long-lived shim process: subreaper of its containers, ttrpc server on the group socket, publisher of
// events. Started by `start` with the socket path; reports readiness on stdout, which `start` waits for.
//
// Readiness is reported as soon as the socket listens, before the heavy modules (protobuf code, logger,
// Task service) load: containerd's connection waits in the backlog meanwhile, so `start` returns
// sooner and loading overlaps with containerd's own work between `start` and Create.
import * as fs from 'node:fs';
import { reaper } from '../native/reaper';
import { GroupListener, READY_EXISTING, READY_LISTENING, bindGroupSocket } from './daemon-socket';
import type { ShimFlags } from './flags';

function tellStart(line: string): void {
  try {
    fs.writeSync(1, `${line}\n`);
  } catch {
    // `start` went away: it will have failed already
  }
}

export async function runDaemon(flags: ShimFlags): Promise<void> {
  if (!flags.socket) throw new Error('the shim daemon needs -socket (it is started by `start`)');
  const bundle = process.cwd();
  const group = new GroupListener();
  const bound = await bindGroupSocket(flags.socket, group.server);
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
  await serveGroup(flags, bundle, group);
  // The daemon outlives the bundle it was started in; stay out of it.
  process.chdir('/');
}

/** Wires the Task service to a bound group socket (a launched daemon, or a claimed spare). */
export async function serveGroup(flags: ShimFlags, bundle: string, group: GroupListener, claimedAt?: number): Promise<void> {
  const { serveShim } = await import('./server');
  const server = serveShim(flags, bundle, claimedAt);
  group.serve((sock) => server.handleConnection(sock));
}
