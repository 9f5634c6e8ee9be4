// ttrpc server: a registry of services plus the connections it serves, on a socket path it creates, on an
// adopted net.Server, or on sockets handed to it.
import { chmodSync } from 'node:fs';
import net from 'node:net';
import { errExists, errPrecondition, errUnimplemented } from '../errors';
import { MAX_MESSAGE_SIZE } from './protocol';
import { ServerConnection, type Logger, type RawHandler } from './server-connection';

export interface ServerOptions {
  maxMessageSize?: number;
  logger?: Logger;
}

export class TtrpcServer {
  private readonly services = new Map<string, Map<string, RawHandler>>();
  private readonly conns = new Set<ServerConnection>();
  private readonly listeners = new Set<net.Server>();
  private readonly maxMessageSize: number;
  private readonly logger: Logger | undefined;
  private closing: Promise<void> | undefined;
  private destroyed = false;

  constructor(opts: ServerOptions = {}) {
    this.maxMessageSize = opts.maxMessageSize ?? MAX_MESSAGE_SIZE;
    this.logger = opts.logger;
  }

  /** Adds a service; the same handler table may be registered under several names. */
  register(service: string, methods: Record<string, RawHandler>): void {
    if (this.services.has(service)) throw errExists(`service ${service}`);
    this.services.set(service, new Map(Object.entries(methods)));
  }

  /** Open connections. */
  get connections(): number {
    return this.conns.size;
  }

  /**
   * Creates a unix socket at `path` with mode 0600 and serves it. The mode is set through the umask, so
   * the socket never exists with wider permissions; where umask is unavailable (worker threads) it is
   * chmod-ed before the event loop can accept a connection.
   */
  async listen(path: string): Promise<void> {
    this.assertOpen();
    const srv = net.createServer({ allowHalfOpen: true });
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      let oldMask: number | undefined;
      try {
        oldMask = process.umask(0o177);
      } catch {
        oldMask = undefined;
      }
      try {
        srv.listen(path, () => {
          srv.off('error', reject);
          resolve();
        });
        if (srv.listening) chmodSync(path, 0o600);
      } catch (err) {
        srv.close();
        reject(err);
      } finally {
        if (oldMask !== undefined) process.umask(oldMask);
      }
    });
    this.serve(srv);
  }

  /** Serves every connection an existing, listening net.Server accepts; close() closes it too. */
  serve(srv: net.Server): void {
    this.assertOpen();
    this.listeners.add(srv);
    srv.on('connection', (sock) => this.handleConnection(sock));
    srv.on('error', (err) => this.logger?.warn({ err }, 'ttrpc listener error'));
  }

  /** Serves one already-connected socket. */
  handleConnection(sock: net.Socket): void {
    if (this.closing || this.destroyed) {
      sock.destroy();
      return;
    }
    const conn = new ServerConnection(sock, (s, m) => this.lookup(s, m), this.maxMessageSize, this.logger);
    this.conns.add(conn);
    void conn.closed.then(() => this.conns.delete(conn));
  }

  /**
   * Stops accepting, answers new requests on open connections with UNAVAILABLE, waits for running handlers
   * to answer, then closes every connection. Idempotent; a handler that never settles keeps it pending.
   */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  /** Closes listeners and connections now; running handlers see their signal abort. */
  destroy(): void {
    this.destroyed = true;
    for (const srv of this.listeners) srv.close();
    this.listeners.clear();
    for (const conn of this.conns) conn.destroy();
  }

  private async shutdown(): Promise<void> {
    const listenersClosed = [...this.listeners].map(
      (srv) => new Promise<void>((resolve) => srv.close(() => resolve())),
    );
    this.listeners.clear();
    const conns = [...this.conns];
    for (const conn of conns) conn.drain();
    await Promise.all([...listenersClosed, ...conns.map((c) => c.closed)]);
  }

  private lookup(service: string, method: string): RawHandler {
    const methods = this.services.get(service);
    if (!methods) throw errUnimplemented(`service ${service}`);
    const handler = methods.get(method);
    if (!handler) throw errUnimplemented(`method ${method}`);
    return handler;
  }

  private assertOpen(): void {
    if (this.closing || this.destroyed) throw errPrecondition('ttrpc server is closed');
  }
}
