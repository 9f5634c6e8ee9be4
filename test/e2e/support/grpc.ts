// Minimal gRPC client for containerd's own API over its unix socket (HTTP/2 prior knowledge), for the calls
// that `ctr` does not offer in every version: Tasks.Update (no `ctr task update` in 1.6 – 2.1) and a
// background Events.Subscribe stream. Messages are encoded by hand; only the fields used here are known.
import http2 from 'node:http2';
import net from 'node:net';
import protobuf from 'protobufjs/minimal';

export class GrpcError extends Error {
  constructor(readonly code: number, message: string) {
    super(`grpc status ${code}: ${message}`);
  }
}

function frame(msg: Uint8Array): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(msg.length, 1);
  return Buffer.concat([head, msg]);
}

/** Splits a byte stream of length-prefixed gRPC messages; returns the unconsumed tail. */
function unframe(buf: Buffer, onMessage: (m: Buffer) => void): Buffer {
  let off = 0;
  while (buf.length - off >= 5) {
    const len = buf.readUInt32BE(off + 1);
    if (buf.length - off - 5 < len) break;
    onMessage(buf.subarray(off + 5, off + 5 + len));
    off += 5 + len;
  }
  return buf.subarray(off);
}

function open(address: string, namespace: string, path: string, body: Uint8Array) {
  const session = http2.connect('http://localhost', { createConnection: () => net.connect(address) });
  session.on('error', () => { /* surfaced through the stream */ });
  const stream = session.request({
    ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers',
    'containerd-namespace': namespace,
  });
  stream.end(frame(body));
  return { session, stream };
}

function statusOf(headers: http2.IncomingHttpHeaders): { code: number; message: string } | undefined {
  const s = headers['grpc-status'];
  if (s === undefined) return undefined;
  return { code: Number(s), message: decodeURIComponent(String(headers['grpc-message'] ?? '')) };
}

export function unary(address: string, namespace: string, path: string, body: Uint8Array): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const { session, stream } = open(address, namespace, path, body);
    let buf: Buffer = Buffer.alloc(0);
    const msgs: Buffer[] = [];
    let status: { code: number; message: string } | undefined;
    stream.on('response', (h) => { status ??= statusOf(h); });
    stream.on('trailers', (h) => { status ??= statusOf(h); });
    stream.on('data', (d: Buffer) => { buf = unframe(Buffer.concat([buf, d]), (m) => msgs.push(Buffer.from(m))); });
    stream.on('error', (err) => { session.close(); reject(err); });
    stream.on('close', () => {
      session.close();
      if (!status) reject(new Error(`${path}: stream closed without grpc-status`));
      else if (status.code !== 0) reject(new GrpcError(status.code, status.message));
      else resolve(msgs[0] ?? Buffer.alloc(0));
    });
  });
}

function encodeAny(typeUrl: string, value: Uint8Array): Uint8Array {
  return protobuf.Writer.create().uint32(10).string(typeUrl).uint32(18).bytes(value).finish();
}

/** containerd.services.tasks.v1.Tasks/Update with an OCI LinuxResources (containerd's JSON type URL). */
export async function updateTaskResources(address: string, namespace: string, containerId: string,
  resources: unknown): Promise<void> {
  const any = encodeAny('types.containerd.io/opencontainers/runtime-spec/1/LinuxResources',
    Buffer.from(JSON.stringify(resources)));
  const req = protobuf.Writer.create().uint32(10).string(containerId).uint32(18).bytes(any).finish();
  await unary(address, namespace, '/containerd.services.tasks.v1.Tasks/Update', req);
}

export interface EventEnvelope { namespace: string; topic: string; typeUrl: string; value: Buffer }

function decodeEnvelope(b: Buffer): EventEnvelope {
  const r = protobuf.Reader.create(b);
  const env: EventEnvelope = { namespace: '', topic: '', typeUrl: '', value: Buffer.alloc(0) };
  while (r.pos < r.len) {
    const tag = r.uint32();
    switch (tag >>> 3) {
      case 2: env.namespace = r.string(); break;
      case 3: env.topic = r.string(); break;
      case 4: {
        const a = protobuf.Reader.create(r.bytes());
        while (a.pos < a.len) {
          const t = a.uint32();
          if (t >>> 3 === 1) env.typeUrl = a.string();
          else if (t >>> 3 === 2) env.value = Buffer.from(a.bytes());
          else a.skipType(t & 7);
        }
        break;
      }
      default: r.skipType(tag & 7);
    }
  }
  return env;
}

/** First string field (field 1) of an event, which is container_id for every /tasks/* event. */
export function eventContainerId(e: EventEnvelope): string {
  const r = protobuf.Reader.create(e.value);
  while (r.pos < r.len) {
    const t = r.uint32();
    if (t >>> 3 === 1 && (t & 7) === 2) return r.string();
    r.skipType(t & 7);
  }
  return '';
}

export interface EventWatch {
  events: EventEnvelope[];
  /** Resolves with the first event (seen before or after the call) that matches. */
  waitFor(pred: (e: EventEnvelope) => boolean, timeoutMs: number): Promise<EventEnvelope>;
  close(): void;
}

const SYNC_TOPIC = '/kybernate/e2e/sync';

/**
 * Subscribes to containerd's event stream (like `ctr events`, in the background). gRPC sends no headers before
 * the first event, so this publishes a marker event until it comes back: after that nothing is missed.
 */
export async function watchEvents(address: string, namespace: string): Promise<EventWatch> {
  const { session, stream } = open(address, '', '/containerd.services.events.v1.Events/Subscribe', new Uint8Array());
  const events: EventEnvelope[] = [];
  const waiters: Array<() => void> = [];
  let buf: Buffer = Buffer.alloc(0);
  stream.on('data', (d: Buffer) => {
    buf = unframe(Buffer.concat([buf, d]), (m) => events.push(decodeEnvelope(Buffer.from(m))));
    for (const wake of waiters.splice(0)) wake();
  });
  stream.on('error', () => { /* the watch ends; waiters time out */ });
  const watch: EventWatch = {
    events,
    waitFor(pred, timeoutMs) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(
          `no matching event within ${timeoutMs} ms; saw: ${events.map((e) => e.topic).join(', ') || 'nothing'}`)), timeoutMs);
        const check = (): void => {
          const hit = events.find(pred);
          if (hit) {
            clearTimeout(timer);
            resolve(hit);
          } else {
            waiters.push(check);
          }
        };
        check();
      });
    },
    close() {
      stream.close();
      session.close();
    },
  };
  const publish = protobuf.Writer.create().uint32(10).string(SYNC_TOPIC)
    .uint32(18).bytes(encodeAny('kybernate.e2e.Sync', new Uint8Array())).finish();
  const deadline = Date.now() + 10_000;
  while (!events.some((e) => e.topic === SYNC_TOPIC)) {
    if (Date.now() > deadline) {
      watch.close();
      throw new Error('event subscription did not deliver its marker event');
    }
    await unary(address, namespace, '/containerd.services.events.v1.Events/Publish', publish);
    await new Promise((r) => setTimeout(r, 100));
  }
  return watch;
}

/** containerd.services.tasks.v1.Tasks/Delete of a stopped task; returns its init pid and exit status. */
export async function deleteTask(address: string, namespace: string, containerId: string):
  Promise<{ pid: number; exitStatus: number }> {
  const req = protobuf.Writer.create().uint32(10).string(containerId).finish();
  const r = protobuf.Reader.create(await unary(address, namespace, '/containerd.services.tasks.v1.Tasks/Delete', req));
  const res = { pid: 0, exitStatus: 0 };
  while (r.pos < r.len) {
    const t = r.uint32();
    if (t >>> 3 === 2) res.pid = r.uint32();
    else if (t >>> 3 === 3) res.exitStatus = r.uint32();
    else r.skipType(t & 7);
  }
  return res;
}
