// The transport under ContainerdClient: one grpc-js channel to containerd's unix socket, generic calls
// with the generated protobufjs codecs, the namespace in metadata, and every failure a KybernateError
// whose code comes from the gRPC status (fromStatus), never from the message text.
import * as grpc from '@grpc/grpc-js';
import { KybernateError, Status, fromStatus } from '../errors';

interface Encoder<T> { encode(m: T): { finish(): Uint8Array } }
interface Decoder<T> { decode(b: Uint8Array): T }

/** One method of containerd's API: its path, the name errors give ("Tasks.Get"), and its codecs. */
export interface Method<Req, Res> {
  readonly path: string;
  readonly name: string;
  serialize(m: Req): Buffer;
  deserialize(b: Buffer): Res;
}

/** `service` is the full name, e.g. containerd.services.tasks.v1.Tasks. */
export function method<Req, Res>(service: string, rpc: string, req: Encoder<Req>, res: Decoder<Res>): Method<Req, Res> {
  return {
    path: `/${service}/${rpc}`,
    name: `${service.slice(service.lastIndexOf('.') + 1)}.${rpc}`,
    serialize: (m) => {
      const b = req.encode(m).finish();
      return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
    },
    deserialize: (b) => res.decode(b),
  };
}

/** Where containerd serves a namespaced call: the `containerd-namespace` metadata key. */
const NAMESPACE_KEY = 'containerd-namespace';

// containerd's own client allows 16 MiB each way (defaults.DefaultMaxRecvMsgSize); grpc-js's default
// 4 MiB receive limit would fail Containers.List on a node with many containers (every spec is inline).
const MAX_MESSAGE_BYTES = 16 << 20;

export interface UnaryOptions {
  /** Absent for calls that are not namespaced (Version, Namespaces.List). */
  namespace?: string;
  /** Absolute time in ms since the epoch; Infinity for none. */
  deadline: number;
  signal?: AbortSignal;
}

export class Channel {
  /** containerd's socket path. */
  readonly socket: string;
  private readonly client: grpc.Client;
  private closed = false;

  /** `address` is the path of containerd's socket; a `unix://` prefix is accepted. */
  constructor(address: string) {
    this.socket = address.replace(/^unix:\/\//, '');
    // `unix:<path>` works for relative and absolute paths alike.
    this.client = new grpc.Client(`unix:${this.socket}`, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
      'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
      // grpc-js backs off up to 120 s between reconnects, failing every call meanwhile; containerd's own
      // client caps it at 3 s, so a restarted containerd is reachable again within seconds.
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 3_000,
    });
  }

  unary<Req, Res>(m: Method<Req, Res>, req: Req, o: UnaryOptions): Promise<Res> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(this.closedError(m));
      if (o.signal?.aborted) {
        return reject(new KybernateError('KYB_ERR_CANCELLED', `containerd ${m.name}: cancelled before it was sent`,
          { cause: o.signal.reason }));
      }
      const onAbort = (): void => call.cancel();
      const call = this.client.makeUnaryRequest(m.path, m.serialize, m.deserialize, req, metadata(o.namespace),
        { deadline: o.deadline }, (err, res) => {
          o.signal?.removeEventListener('abort', onAbort);
          if (err) reject(this.error(m, err, expired(err, o) ? Status.DEADLINE_EXCEEDED : err.code));
          else resolve(res as Res);
        });
      o.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** A server-streaming call without a deadline; the caller ends it with cancel(). */
  serverStream<Req, Res>(m: Method<Req, Res>, req: Req): grpc.ClientReadableStream<Res> {
    if (this.closed) throw this.closedError(m);
    return this.client.makeServerStreamRequest(m.path, m.serialize, m.deserialize, req, metadata(undefined));
  }

  /**
   * A failed call's status (`status`, default its own) as a KybernateError. UNAVAILABLE names the socket:
   * it is what an unreachable containerd (socket missing, connection refused or dropped) gives.
   */
  error(m: Method<unknown, unknown>, err: grpc.ServiceError, status: number = err.code): KybernateError {
    const where = status === Status.UNAVAILABLE ? ` (containerd socket ${this.socket})` : '';
    return new KybernateError(fromStatus(status), `containerd ${m.name}: ${err.details || err.message}${where}`,
      { cause: err });
  }

  /** Idempotent. Calls in flight finish (each has its deadline); later calls fail with KYB_ERR_UNAVAILABLE. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.client.close();
  }

  private closedError(m: Method<unknown, unknown>): KybernateError {
    return new KybernateError('KYB_ERR_UNAVAILABLE', `containerd ${m.name}: the client for ${this.socket} is closed`);
  }
}

/**
 * Whether a failure is the call's own deadline, though the status says otherwise. The server enforces the
 * deadline too (grpc-timeout), and its answer can beat grpc-js's timer: grpc-go resets the stream, which
 * grpc-js reports as CANCELLED, and containerd 1.6 returns its expired context's error as UNKNOWN. Either,
 * once the deadline has passed and the caller has not aborted, is that deadline.
 */
function expired(err: grpc.ServiceError, o: UnaryOptions): boolean {
  return (err.code === Status.CANCELLED || err.code === Status.UNKNOWN) && Date.now() >= o.deadline && !o.signal?.aborted;
}

function metadata(namespace: string | undefined): grpc.Metadata {
  const md = new grpc.Metadata();
  if (namespace !== undefined) md.set(NAMESPACE_KEY, namespace);
  return md;
}
