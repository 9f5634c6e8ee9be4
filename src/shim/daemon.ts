// The long-lived shim process: subreaper of its containers, ttrpc server on the group socket, publisher of
// events. Started by `start` with the socket path; reports readiness on stdout, which `start` waits for.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { reaper } from '../native/reaper';
import { TtrpcServer } from '../ttrpc';
import { READY_EXISTING, READY_LISTENING, bindGroupSocket } from './daemon-socket';
import type { ShimFlags } from './flags';
import { openLogger } from './log';
import { Publisher } from './publisher';
import { TaskService } from './service';
import { registerTaskService } from './task-api';

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
  const log = openLogger(path.join(bundle, 'log'), flags.debug, { namespace: flags.namespace });
  reaper.start();

  const ttrpcAddress = process.env.TTRPC_ADDRESS ?? `${flags.address}.ttrpc`;
  const publisher = new Publisher(ttrpcAddress, flags.namespace, log);
  const server = new TtrpcServer({ logger: log });
  let shuttingDown = false;
  const shutdown = async (why: string) => {
    if (shuttingDown) return;
    shuttingDown = true;
    log.info({ why }, 'shim shutting down');
    await publisher.close();
    await Promise.race([server.close(), new Promise((r) => setTimeout(r, 2_000))]);
    fs.rmSync(flags.socket, { force: true });
    process.exit(0);
  };
  const service = new TaskService({ namespace: flags.namespace, publisher, log, onShutdown: () => void shutdown('Shutdown RPC') });
  reaper.on('exit', (e: { pid: number; status: number }) => service.handleExit(e.pid, e.status));
  registerTaskService(server, service);

  const listener = net.createServer((sock) => server.handleConnection(sock));
  const bound = await bindGroupSocket(flags.socket, listener);
  if (!bound) {
    // Another daemon of this group won the race; `start` reports its address.
    tellStart(READY_EXISTING);
    process.exit(0);
  }
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('uncaughtException', (err) => log.error({ err: err.stack ?? String(err) }, 'uncaught exception'));
  process.on('unhandledRejection', (err) => log.error({ err: String(err) }, 'unhandled rejection'));
  // The daemon outlives the bundle it was started in; stay out of it.
  process.chdir('/');
  log.info({ socket: flags.socket, pid: process.pid }, 'shim listening');
  tellStart(READY_LISTENING);
  // Nothing more goes to stdout: it is the readiness pipe, and `start` has exited.
  fs.closeSync(1);
  fs.openSync('/dev/null', 'w');
}
