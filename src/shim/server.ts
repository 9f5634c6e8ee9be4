// Wiring of the shim daemon: logger, event publisher, Task and Control services and their ttrpc server, signals.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { reaper } from '../native/reaper';
import { TtrpcServer } from '../ttrpc';
import { ControlService } from './control';
import { registerControlService } from './control-api';
import type { ShimFlags } from './flags';
import { openLogger } from './log';
import { Publisher } from './publisher';
import { TaskService } from './service';
import { registerTaskService } from './task-api';

const SERVER_CLOSE_TIMEOUT_MS = 2_000;

/**
 * `claimedAt` (performance.now()) is set for a claimed spare: its boot happened long before, so the log's
 * bootMs is then the time from the claim to serving.
 */
export function serveShim(flags: ShimFlags, bundle: string, claimedAt?: number): TtrpcServer {
  const log = openLogger(path.join(bundle, 'log'), flags.debug, { namespace: flags.namespace });
  const ttrpcAddress = process.env.TTRPC_ADDRESS ?? `${flags.address}.ttrpc`;
  const publisher = new Publisher(ttrpcAddress, flags.namespace, log);
  const server = new TtrpcServer({ logger: log });

  let shuttingDown = false;
  const shutdown = async (why: string) => {
    if (shuttingDown) return;
    shuttingDown = true;
    log.info({ why }, 'shim shutting down');
    await publisher.close();
    // Wait calls of containers may never finish on their own: bound the graceful close.
    await Promise.race([server.close(), new Promise((r) => setTimeout(r, SERVER_CLOSE_TIMEOUT_MS))]);
    fs.rmSync(flags.socket, { force: true });
    process.exit(0);
  };
  const service = new TaskService({ namespace: flags.namespace, publisher, log, onShutdown: () => void shutdown('Shutdown RPC') });
  reaper.on('exit', (e) => service.handleExit(e.pid, e.status));
  registerTaskService(server, service);
  registerControlService(server, new ControlService({ containers: service.containers, publisher, log }));

  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('uncaughtException', (err) => log.error({ err: err.stack ?? String(err) }, 'uncaught exception'));
  process.on('unhandledRejection', (err) => log.error({ err: String(err) }, 'unhandled rejection'));
  const bootMs = Math.round(claimedAt === undefined ? process.uptime() * 1000 : performance.now() - claimedAt);
  log.info({ socket: flags.socket, pid: process.pid, bootMs, spare: claimedAt !== undefined }, 'shim listening');
  return server;
}
