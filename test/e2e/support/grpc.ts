// containerd's own gRPC API over its unix socket, for what `ctr` does not offer in every version:
// Tasks.Update (no `ctr task update` in 1.6 – 2.1), Tasks.Delete with its exit status, and a background
// Events.Subscribe stream. Transport is @grpc/grpc-js; messages are the generated protobufjs codecs of
// proto/containerd/services/{tasks,events}/v1.
import * as grpc from '@grpc/grpc-js';
import { containerd } from '../../../src/gen/proto';

const tasks = containerd.services.tasks.v1;
const events = containerd.services.events.v1;
const Empty = { decode: (): Record<string, never> => ({}) };

/** Per-call deadline, so that a hung daemon fails the call with its method name instead of hanging the test. */
const CALL_TIMEOUT_MS = 30_000;

interface Encoder<T> { encode(m: T): { finish(): Uint8Array } }
interface Decoder<T> { decode(b: Uint8Array): T }

const serializer = <T>(type: Encoder<T>) => (m: T): Buffer => {
  const b = type.encode(m).finish();
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
};

/**
 * One grpc-js channel to a containerd; calls carry `containerd-namespace` when a namespace is given, and
 * `containerd-lease` when a lease is (what they write is then held by that lease).
 */
export class ContainerdClient {
  private readonly client: grpc.Client;

  constructor(address: string, readonly namespace?: string, readonly lease?: string) {
    this.client = new grpc.Client(`unix://${address}`, grpc.credentials.createInsecure());
  }

  private metadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    if (this.namespace) md.set('containerd-namespace', this.namespace);
    if (this.lease) md.set('containerd-lease', this.lease);
    return md;
  }

  unary<Req, Res>(method: string, reqType: Encoder<Req>, resType: Decoder<Res>, req: Req): Promise<Res> {
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(method, serializer(reqType), (b: Buffer) => resType.decode(b), req, this.metadata(),
        { deadline: Date.now() + CALL_TIMEOUT_MS }, (err, res) => {
          if (err) reject(new Error(`${method}: ${err.message}`, { cause: err }));
          else resolve(res as Res);
        });
    });
  }

  serverStream<Req, Res>(method: string, reqType: Encoder<Req>, resType: Decoder<Res>, req: Req):
    grpc.ClientReadableStream<Res> {
    return this.client.makeServerStreamRequest(method, serializer(reqType), (b: Buffer) => resType.decode(b), req,
      this.metadata());
  }

  /** A client-streaming call sent as `reqs`; resolves to the last response. */
  async stream<Req, Res>(method: string, reqType: Encoder<Req>, resType: Decoder<Res>, reqs: Req[]): Promise<Res> {
    const call = this.client.makeBidiStreamRequest(method, serializer(reqType), (b: Buffer) => resType.decode(b), this.metadata(),
      { deadline: Date.now() + CALL_TIMEOUT_MS });
    return new Promise((resolve, reject) => {
      let last: Res | undefined;
      call.on('data', (r: Res) => { last = r; });
      call.on('error', (err: Error) => reject(new Error(`${method}: ${err.message}`, { cause: err })));
      call.on('end', () => (last === undefined ? reject(new Error(`${method}: no response`)) : resolve(last)));
      for (const r of reqs) call.write(r);
      call.end();
    });
  }

  close(): void {
    this.client.close();
  }
}

async function once<T>(address: string, namespace: string, fn: (c: ContainerdClient) => Promise<T>): Promise<T> {
  const c = new ContainerdClient(address, namespace);
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

/** containerd.services.tasks.v1.Tasks/Update with an OCI LinuxResources (containerd's JSON type URL). */
export async function updateTaskResources(address: string, namespace: string, containerId: string,
  resources: unknown): Promise<void> {
  await once(address, namespace, (c) => c.unary('/containerd.services.tasks.v1.Tasks/Update', tasks.UpdateTaskRequest,
    Empty, {
      containerId,
      resources: {
        type_url: 'types.containerd.io/opencontainers/runtime-spec/1/LinuxResources',
        value: Buffer.from(JSON.stringify(resources)),
      },
    }));
}

/** containerd.services.tasks.v1.Tasks/Delete of a stopped task; returns its init pid and exit status. */
export async function deleteTask(address: string, namespace: string, containerId: string):
  Promise<{ pid: number; exitStatus: number }> {
  const res = await once(address, namespace, (c) => c.unary('/containerd.services.tasks.v1.Tasks/Delete',
    tasks.DeleteTaskRequest, tasks.DeleteResponse, { containerId }));
  return { pid: res.pid, exitStatus: res.exitStatus };
}

export interface EventEnvelope { namespace: string; topic: string; typeUrl: string; value: Buffer }

function toEnvelope(e: containerd.types.Envelope): EventEnvelope {
  return {
    namespace: e.namespace, topic: e.topic, typeUrl: e.event?.type_url ?? '',
    value: Buffer.from(e.event?.value ?? new Uint8Array()),
  };
}

const TASK_EVENT_PREFIX = 'containerd.events.';
const TASK_EVENTS: Record<string, Decoder<{ containerId: string }>> = {
  TaskCreate: containerd.events.TaskCreate, TaskStart: containerd.events.TaskStart,
  TaskDelete: containerd.events.TaskDelete, TaskExit: containerd.events.TaskExit, TaskOOM: containerd.events.TaskOOM,
  TaskExecAdded: containerd.events.TaskExecAdded, TaskExecStarted: containerd.events.TaskExecStarted,
  TaskPaused: containerd.events.TaskPaused, TaskResumed: containerd.events.TaskResumed,
  TaskCheckpointed: containerd.events.TaskCheckpointed,
};

/** The container id of a /tasks/* event; '' for any other event. */
export function eventContainerId(e: EventEnvelope): string {
  if (!e.typeUrl.startsWith(TASK_EVENT_PREFIX)) return '';
  const type = TASK_EVENTS[e.typeUrl.slice(TASK_EVENT_PREFIX.length)];
  return type ? type.decode(e.value).containerId : '';
}

export interface EventWatch {
  events: EventEnvelope[];
  /** Resolves with the first event (seen before or after the call) that matches. */
  waitFor(pred: (e: EventEnvelope) => boolean, timeoutMs: number): Promise<EventEnvelope>;
  close(): void;
}

const SYNC_TOPIC = '/kybernate/e2e/sync';

/**
 * Subscribes to containerd's event stream of every namespace (like `ctr events`, in the background).
 * containerd sends no response headers before the first event, so nothing tells when the subscription is
 * live; this publishes a marker event until it comes back: after that nothing is missed.
 */
export async function watchEvents(address: string, namespace: string): Promise<EventWatch> {
  const subscriber = new ContainerdClient(address);
  const publisher = new ContainerdClient(address, namespace);
  const stream = subscriber.serverStream('/containerd.services.events.v1.Events/Subscribe', events.SubscribeRequest,
    containerd.types.Envelope, {});
  const seen: EventEnvelope[] = [];
  const waiters: Array<() => void> = [];
  stream.on('data', (e: containerd.types.Envelope) => {
    seen.push(toEnvelope(e));
    for (const wake of waiters.splice(0)) wake();
  });
  stream.on('error', () => { /* the watch ends (close() cancels it too); waiters time out */ });
  const watch: EventWatch = {
    events: seen,
    waitFor(pred, timeoutMs) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(
          `no matching event within ${timeoutMs} ms; saw: ${seen.map((e) => e.topic).join(', ') || 'nothing'}`)), timeoutMs);
        const check = (): void => {
          const hit = seen.find(pred);
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
      stream.cancel();
      subscriber.close();
      publisher.close();
    },
  };
  const deadline = Date.now() + 10_000;
  try {
    while (!seen.some((e) => e.topic === SYNC_TOPIC)) {
      if (Date.now() > deadline) throw new Error('event subscription did not deliver its marker event');
      await publisher.unary('/containerd.services.events.v1.Events/Publish', events.PublishRequest, Empty,
        { topic: SYNC_TOPIC, event: { type_url: 'kybernate.e2e.Sync', value: new Uint8Array() } });
      await new Promise((r) => setTimeout(r, 100));
    }
  } catch (err) {
    watch.close();
    throw err;
  }
  return watch;
}
