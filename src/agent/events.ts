// The Events stream's source: state changes found by comparing the view of a workload before and after
// each containerd event that can change it (and after each operation), plus operation progress and results.
//
// Invariants:
// - Comparisons of one workload run one after the other (a promise chain per workload), each on a view
//   computed inside its turn, so two events never publish changes out of order or twice.
// - After every (re)subscription to containerd the whole view is compared again: changes missed while
//   the stream was down are published then, so the stream is as level-based as List.
// - Subscribers get events synchronously through send(); one that cannot keep up is dropped by its own
//   send (service.ts), never buffered without bound here.
import Long from 'long';
import type { Logger } from 'pino';
import protobuf from 'protobufjs/minimal';
import type { ContainerdClient, EventEnvelope } from '../containerd/client';
import { KybernateError } from '../errors';
import { kybernate } from '../gen/proto';
import { toTimestamp } from '../timestamp';
import { TOPIC_RESUMED, TOPIC_SUSPENDED } from '../shim-client/control';
import type { OpEvents, OpStep } from './context';
import type { OperationKind, OperationOutcome } from './operations';
import type { WorkloadState, WorkloadView, Workloads } from './workloads';

type Event = kybernate.agent.v1.IEvent;
const S = kybernate.agent.v1.WorkloadState;

/** The containerd topics after which a workload's state may differ. */
const TOPICS = [
  '/tasks/create', '/tasks/start', '/tasks/exit', '/tasks/delete', '/tasks/paused', '/tasks/resumed', '/tasks/checkpointed',
  '/containers/create', '/containers/delete', TOPIC_SUSPENDED, TOPIC_RESUMED,
];
const FILTERS = TOPICS.map((t) => `topic==${JSON.stringify(t)}`);
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 30_000;

/** A state name as the proto's enum (UNKNOWN has no value of its own: UNSPECIFIED). */
export function stateValue(state: WorkloadState | undefined): kybernate.agent.v1.WorkloadState {
  return state === undefined || state === 'UNKNOWN' ? S.WORKLOAD_STATE_UNSPECIFIED : S[state];
}

export interface Subscriber {
  /** '' = every namespace. */
  namespace: string;
  send(e: Event): void;
}

export class AgentEvents implements OpEvents {
  private readonly subscribers = new Set<Subscriber>();
  /** The last state published (or first seen) per workload: what the next view is compared with. */
  private readonly states = new Map<string, WorkloadState>();
  private readonly chains = new Map<string, Promise<unknown>>();
  /** Per workload, the comparison queued in its chain that has not started yet. */
  private readonly waiting = new Map<string, Promise<WorkloadView | undefined>>();
  private subscription: { close(): void } | undefined;
  private retryMs = RETRY_MIN_MS;
  private retryTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly deps: {
    containerd: Pick<ContainerdClient, 'subscribe'>;
    workloads: Pick<Workloads, 'list' | 'get' | 'forget'>;
    log: Logger;
  }) {}

  /** Subscribes to containerd (again after every failure) and compares the whole view each time. */
  start(): void {
    if (this.closed) return;
    this.subscription = this.deps.containerd.subscribe(FILTERS, (e) => this.onContainerdEvent(e), (err) => {
      this.subscription = undefined;
      if (this.closed) return;
      this.deps.log.warn({ err: err?.message, retryMs: this.retryMs }, 'containerd event stream ended; subscribing again');
      this.retryTimer = setTimeout(() => this.start(), this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
    });
    void this.resync();
  }

  subscribe(s: Subscriber): () => void {
    this.subscribers.add(s);
    return () => this.subscribers.delete(s);
  }

  get subscriberCount(): number {
    return this.subscribers.size;
  }

  progress(namespace: string, id: string, operation: string, step: OpStep): void {
    this.publish(namespace, id, { progress: { operation, step: { name: step.name, durationMs: step.durationMs, bytes: Long.fromNumber(step.bytes ?? 0, true) } } });
  }

  /** A snapshot move's bytes so far (the CLI's progress bar). */
  moveProgress(namespace: string, id: string, snapshot: string, tier: string, done: number, total: number): void {
    this.publish(namespace, id, { progress: {
      operation: 'move', snapshot, step: { name: `move-${tier}`, durationMs: 0, bytes: Long.fromNumber(done, true) },
      bytesDone: Long.fromNumber(done, true), bytesTotal: Long.fromNumber(total, true),
    } });
  }

  operationDone(kind: OperationKind, namespace: string, id: string, o: OperationOutcome): void {
    this.publish(namespace, id, { done: { operation: kind, ok: o.ok, code: o.code ?? '', message: o.message ?? '', durationMs: o.durationMs } });
  }

  /**
   * Computes the workload's view in its turn and publishes a StateChanged when its state differs; resolves
   * to that view (undefined when the workload is gone or cannot be looked at), so an operation's reply can
   * use the very view its events were published from.
   */
  refresh(namespace: string, id: string): Promise<WorkloadView | undefined> {
    const k = `${namespace}/${id}`;
    // A comparison queued and not started yet computes its view after this call: it serves this one too
    // (an operation's refresh and the events its own shim published need one view, not one each).
    const waiting = this.waiting.get(k);
    if (waiting) return waiting;
    const next = (this.chains.get(k) ?? Promise.resolve()).then(() => {
      if (this.waiting.get(k) === next) this.waiting.delete(k);
      return this.compare(namespace, id);
    }).catch((err: Error) => {
      this.deps.log.warn({ namespace, id, err: err.message }, 'cannot look at the workload after an event');
      return undefined;
    });
    this.chains.set(k, next);
    this.waiting.set(k, next);
    void next.then(() => { if (this.chains.get(k) === next) this.chains.delete(k); });
    return next;
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.subscription?.close();
    this.subscribers.clear();
  }

  private onContainerdEvent(e: EventEnvelope): void {
    this.retryMs = RETRY_MIN_MS;
    const id = e.event ? containerIdOf(e.event.value) : undefined;
    if (id) void this.refresh(e.namespace, id);
    else void this.resync();
  }

  /** Every workload compared again: those listed, and those seen before that are gone now. */
  private async resync(): Promise<void> {
    try {
      const listed = await this.deps.workloads.list();
      const keys = new Set([...listed.map((w) => `${w.namespace}/${w.id}`), ...this.states.keys()]);
      await Promise.all([...keys].map((k) => {
        const at = k.indexOf('/');
        return this.refresh(k.slice(0, at), k.slice(at + 1));
      }));
    } catch (err) {
      this.deps.log.warn({ err: (err as Error).message }, 'cannot list the workloads to compare their states');
    }
  }

  private async compare(namespace: string, id: string): Promise<WorkloadView | undefined> {
    const k = `${namespace}/${id}`;
    let view: WorkloadView | undefined;
    try {
      view = await this.deps.workloads.get(namespace, id);
    } catch (err) {
      if (!(KybernateError.is(err) && err.code === 'KYB_ERR_NOT_FOUND')) throw err;
      this.deps.workloads.forget(namespace, id);
    }
    const now = view?.state;
    const before = this.states.get(k);
    if (before === now) return view;
    if (now === undefined) this.states.delete(k);
    else this.states.set(k, now);
    this.deps.log.info({ namespace, id, from: before ?? 'none', to: now ?? 'gone' }, 'workload state changed');
    this.publish(namespace, id, { state: { from: stateValue(before), to: stateValue(now) } });
    return view;
  }

  private publish(namespace: string, id: string, kind: Pick<Event, 'state' | 'progress' | 'done'>): void {
    if (this.subscribers.size === 0) return;
    const e: Event = { time: toTimestamp(new Date()), namespace, id, ...kind };
    for (const s of this.subscribers) {
      if (s.namespace === '' || s.namespace === namespace) s.send(e);
    }
  }
}

/**
 * Field 1 of every event these topics carry is the container's id (TaskCreate.container_id, ...,
 * ContainerCreate.id, ContainerSuspended.container_id): read without knowing the message type.
 */
function containerIdOf(value: Uint8Array): string | undefined {
  try {
    const r = protobuf.Reader.create(value);
    while (r.pos < r.len) {
      const tag = r.uint32();
      if (tag >>> 3 === 1 && (tag & 7) === 2) return r.string();
      r.skipType(tag & 7);
    }
  } catch {
    // not a message we can read: compare everything instead
  }
  return undefined;
}
