// Finding and dialing the shim that serves a container, the way containerd does: the task's
// directory under containerd's state dir holds the shim's address (`address`, or containerd 2.x's
// `bootstrap.json`). The namespace and id become path components, so only containerd's identifier
// alphabet is accepted.
import fs from 'node:fs';
import path from 'node:path';
import { KybernateError, Status, StatusError } from '../errors';
import { validateId } from '../ids';
import { TtrpcClient, type CallOptions, type Decoder, type Encoder } from '../ttrpc';

export const DEFAULT_STATE_DIR = '/run/containerd';
export const DEFAULT_NAMESPACE = 'default';
const TASK_DIR = 'io.containerd.runtime.v2.task';

export interface ShimLocation {
  /** The task's directory in containerd's state dir. */
  dir: string;
  /** The shim's unix socket path. */
  socket: string;
}

/** The socket of the shim serving `id` in `namespace`; NotFound when containerd has no task for it. */
export function locateShim(stateDir: string, namespace: string, id: string): ShimLocation {
  validateId('namespace', namespace);
  validateId('container id', id);
  const dir = path.join(stateDir, TASK_DIR, namespace, id);
  let address: string;
  try {
    address = fs.readFileSync(path.join(dir, 'address'), 'utf8').trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    let text: string;
    try {
      text = fs.readFileSync(path.join(dir, 'bootstrap.json'), 'utf8');
    } catch (err2) {
      if ((err2 as NodeJS.ErrnoException).code !== 'ENOENT') throw err2;
      throw new KybernateError('KYB_ERR_NOT_FOUND',
        `container ${id} has no running task in namespace ${namespace} (nothing at ${dir}; is --state-dir containerd's state directory?)`);
    }
    const b = JSON.parse(text) as { address?: unknown; protocol?: unknown };
    if (typeof b.address !== 'string') throw new KybernateError('KYB_ERR_INTERNAL', `${path.join(dir, 'bootstrap.json')}: no address`);
    if (b.protocol !== undefined && b.protocol !== 'ttrpc') {
      throw new KybernateError('KYB_ERR_UNIMPLEMENTED', `the shim of container ${id} speaks ${String(b.protocol)}, not ttrpc`);
    }
    address = b.address;
  }
  let socket: string;
  if (address.startsWith('unix://')) socket = address.slice('unix://'.length);
  else if (address.startsWith('/')) socket = address;
  else throw new KybernateError('KYB_ERR_INTERNAL', `container ${id}: unsupported shim address ${JSON.stringify(address)}`);
  return { dir, socket };
}

/** ShimClient.shared's connections, per shim socket; one leaves when it closes or a call on it fails. */
const sharedConnections = new Map<string, Promise<TtrpcClient>>();

/** One connection to a container's shim, with the namespace every call carries. */
export class ShimClient {
  private constructor(private readonly client: TtrpcClient, readonly namespace: string, readonly id: string,
    private readonly isShared = false) {}

  /**
   * Like connect(), on a connection kept per shim socket for later calls (a long-lived process such as the
   * agent saves a dial per call). close() leaves it open; it is dropped when the shim closes it (the shim
   * exits) or when a call on it fails, and a closed one is never handed out.
   */
  static async shared(stateDir: string, namespace: string, id: string): Promise<ShimClient> {
    const { socket } = locateShim(stateDir, namespace, id);
    for (;;) {
      let conn = sharedConnections.get(socket);
      if (!conn) {
        const dial = TtrpcClient.connect(socket).then((c) => {
          c.once('close', () => { if (sharedConnections.get(socket) === dial) sharedConnections.delete(socket); });
          return c;
        });
        dial.catch(() => { if (sharedConnections.get(socket) === dial) sharedConnections.delete(socket); });
        sharedConnections.set(socket, conn = dial);
      }
      let client: TtrpcClient;
      try {
        client = await conn;
      } catch (err) {
        throw new KybernateError('KYB_ERR_UNAVAILABLE', `cannot reach the shim of container ${id} at ${socket}: ${(err as Error).message}`, { cause: err });
      }
      if (!client.isClosed) return new ShimClient(client, namespace, id, true);
      if (sharedConnections.get(socket) === conn) sharedConnections.delete(socket);
    }
  }

  /** Closes every kept connection (a daemon shutting down: nothing of ours keeps its process alive). */
  static async closeShared(): Promise<void> {
    const conns = [...sharedConnections.values()];
    sharedConnections.clear();
    await Promise.all(conns.map((c) => c.then((client) => client.close(), () => undefined)));
  }

  static async connect(stateDir: string, namespace: string, id: string): Promise<ShimClient> {
    const { socket } = locateShim(stateDir, namespace, id);
    try {
      return new ShimClient(await TtrpcClient.connect(socket), namespace, id);
    } catch (err) {
      throw new KybernateError('KYB_ERR_UNAVAILABLE', `cannot reach the shim of container ${id} at ${socket}: ${(err as Error).message}`, { cause: err });
    }
  }

  /**
   * A unary call; a shim without the service (not kybernate's) is named as such. UNIMPLEMENTED alone says
   * so: a ttrpc server answers it for an unknown service or method (ours: src/ttrpc/server.ts's lookup;
   * containerd's Go shims alike), and no Control handler answers it for anything else.
   */
  async request<Req, Res>(service: string, method: string, req: Encoder<Req>, res: Decoder<Res>, message: Req,
    opts: CallOptions = {}): Promise<Res> {
    try {
      return await this.client.request(service, method, req, res, message, {
        ...opts, metadata: { 'containerd-namespace-ttrpc': this.namespace, ...opts.metadata },
      });
    } catch (err) {
      // A shared connection that failed a call is not trusted with the next one (timed out, closed, ...).
      if (this.isShared) this.client.destroy();
      if (err instanceof StatusError && err.status === Status.UNIMPLEMENTED) {
        throw new StatusError(err.status,
          `container ${this.id} is not run by the kybernate runtime (its shim has no ${service}/${method}: ${err.message})`);
      }
      throw err;
    }
  }

  /** Closes the connection (a shared one stays open for the next caller). */
  close(): void {
    if (!this.isShared) this.client.destroy();
  }
}
