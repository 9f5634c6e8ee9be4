// The agent's gRPC server: the root-only unix socket always, TCP with mutual TLS when configured.
//
// Invariants: the socket's directory, when the agent creates it, is 0700 and the socket 0600 from the
// moment bind() creates it (umask), so only root can connect. A live agent's socket is never taken over:
// "probe, remove a stale socket, bind" runs under a lock directory, so two agents starting at once cannot
// both think the socket stale. TCP never runs without client certificates signed by the configured CA.
import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { MAX_REQUEST_BYTES, agentDefinition } from '../agent-api/definition';
import { KybernateError } from '../errors';
import { bindRootOnlySocket } from '../socket-lock';

const SHUTDOWN_GRACE_MS = 5_000;

export interface ListenConfig {
  socket: string;
  /** HOST:PORT with the PEM files of tls; undefined: no TCP. */
  tcp?: { address: string; ca: Buffer; cert: Buffer; key: Buffer };
}

export interface AgentServer {
  socket: string;
  /** The bound TCP address (its port resolved when 0 was asked for). */
  tcp?: string;
  /** Graceful (calls in flight get SHUTDOWN_GRACE_MS), then forceful; removes the socket. */
  close(): Promise<void>;
}

function bind(server: grpc.Server, address: string, creds: grpc.ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(address, creds, (err, port) => (err ? reject(err) : resolve(port)));
  });
}

/** Binds the unix socket (and TCP), registers the service; the server is serving when this resolves. */
export async function listen(cfg: ListenConfig, handlers: grpc.UntypedServiceImplementation): Promise<AgentServer> {
  const server = new grpc.Server({ 'grpc.max_receive_message_length': MAX_REQUEST_BYTES });
  server.addService(agentDefinition, handlers);
  const socket = path.resolve(cfg.socket);
  try {
    await bindRootOnlySocket(socket, 'kybernate-agent', '--socket', async () => {
      await bind(server, `unix://${socket}`, grpc.ServerCredentials.createInsecure());
    });
    let tcp: string | undefined;
    if (cfg.tcp) {
      const { address, ca, cert, key } = cfg.tcp;
      // checkClientCertificate = true: a client without a certificate signed by `ca` fails the handshake.
      const creds = grpc.ServerCredentials.createSsl(ca, [{ cert_chain: cert, private_key: key }], true);
      const port = await bind(server, address, creds).catch((err: Error) => {
        throw new KybernateError('KYB_ERR_UNAVAILABLE', `cannot listen on ${address} (--tcp): ${err.message}`, { cause: err });
      });
      tcp = `${address.slice(0, address.lastIndexOf(':'))}:${port}`;
    }
    return { socket, tcp, close: () => shutdown(server, socket) };
  } catch (err) {
    server.forceShutdown();
    throw err;
  }
}

async function shutdown(server: grpc.Server, socket: string): Promise<void> {
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => { server.forceShutdown(); resolve(); }, SHUTDOWN_GRACE_MS);
    server.tryShutdown(() => { clearTimeout(timer); resolve(); });
  });
  fs.rmSync(socket, { force: true });
}
