// One operation per workload at a time, idempotent retries, and cancellation of waiting callers.
//
// Invariants:
// - Operations of one workload (namespace/id) run one after the other in arrival order; a second one
//   WAITS for the first, it is never refused for being second. Different workloads run in parallel.
// - A caller's signal (its cancellation, its deadline) bounds only its wait: an operation nobody waits for
//   any more is taken out of the queue before it starts and never runs. One that has started runs to its
//   end whoever goes away (a workload is never left half-way), and its result is kept for retries.
// - A request id names one operation: a retry with it, while the operation waits, runs or after it ended
//   (within the last RECENT_LIMIT ids and RECENT_TTL_MS), gets that operation's outcome, success or
//   failure, and never runs it again. Reusing an id for another kind or workload is INVALID_ARGUMENT.
import { KybernateError } from '../errors';
import { asKybernateError } from './failure';

export type OperationKind = 'suspend' | 'resume' | 'checkpoint' | 'restore';

export interface OperationCall<T> {
  kind: OperationKind;
  namespace: string;
  id: string;
  /** '' or undefined: not idempotent. */
  requestId?: string;
  /** The caller's cancellation and deadline (see the file comment for what they bound). */
  signal?: AbortSignal;
  run: () => Promise<T>;
}

export interface OperationOutcome {
  ok: boolean;
  /** The KYB_ERR_ code and message of a failure. */
  code?: string;
  message?: string;
  durationMs: number;
}

/** Told when an operation starts running and when it ends (metrics, the Events stream). */
export interface OperationObserver {
  started(kind: OperationKind, namespace: string, id: string): void;
  done(kind: OperationKind, namespace: string, id: string, outcome: OperationOutcome): void;
}

const RECENT_LIMIT = 1000;
const RECENT_TTL_MS = 10 * 60 * 1000;

interface Pending {
  kind: OperationKind;
  key: string;
  namespace: string;
  id: string;
  requestId?: string;
  run: () => Promise<unknown>;
  promise: Promise<unknown>;
  resolve(v: unknown): void;
  reject(err: unknown): void;
  /** Callers waiting for it; at 0 before it started, it is dropped. */
  waiters: number;
  started: boolean;
  /** When it ended (Date.now()); undefined before. */
  endedAt?: number;
}

export class Operations {
  /** Per workload: the running operation first, then the waiting ones in arrival order. */
  private readonly queues = new Map<string, Pending[]>();
  /** Request id → its operation, oldest first (a Map keeps insertion order; a retry moves it last). */
  private readonly recent = new Map<string, Pending>();

  constructor(private readonly observer: OperationObserver,
    private readonly limits: { entries: number; ttlMs: number } = { entries: RECENT_LIMIT, ttlMs: RECENT_TTL_MS }) {}

  /** The kind of the operation running on the workload, if one is. */
  current(namespace: string, id: string): OperationKind | undefined {
    const head = this.queues.get(key(namespace, id))?.[0];
    return head?.started ? head.kind : undefined;
  }

  /** Runs `call.run` in the workload's turn (or joins the operation of the same request id). */
  run<T>(call: OperationCall<T>): Promise<T> {
    const k = key(call.namespace, call.id);
    this.expire();
    let p = call.requestId ? this.recent.get(call.requestId) : undefined;
    if (p && (p.kind !== call.kind || p.key !== k)) {
      return Promise.reject(new KybernateError('KYB_ERR_INVALID_ARGUMENT',
        `request id ${JSON.stringify(call.requestId)} was used for ${p.kind} of ${p.key}, not for ${call.kind} of ${k}`));
    }
    if (p) {
      this.recent.delete(p.requestId!);
      this.recent.set(p.requestId!, p);
    } else {
      p = this.enqueue(call, k);
    }
    return this.wait(p, call.signal) as Promise<T>;
  }

  private enqueue(call: OperationCall<unknown>, k: string): Pending {
    let resolve!: (v: unknown) => void;
    let reject!: (err: unknown) => void;
    const promise = new Promise<unknown>((res, rej) => { resolve = res; reject = rej; });
    promise.catch(() => {}); // every caller gets the rejection through wait(); a dropped one has none
    const p: Pending = {
      kind: call.kind, key: k, namespace: call.namespace, id: call.id, requestId: call.requestId || undefined,
      run: call.run, promise, resolve, reject, waiters: 0, started: false,
    };
    if (p.requestId) this.recent.set(p.requestId, p);
    const q = this.queues.get(k);
    if (q) q.push(p);
    else this.queues.set(k, [p]);
    this.startHead(k);
    return p;
  }

  private wait(p: Pending, signal: AbortSignal | undefined): Promise<unknown> {
    p.waiters++;
    if (!signal) return p.promise;
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        p.waiters--;
        if (!p.started && p.waiters === 0) this.drop(p);
        reject(asKybernateError(signal.reason ?? new KybernateError('KYB_ERR_CANCELLED', 'the call was cancelled')));
      };
      if (signal.aborted) {
        onAbort();
        return;
      }
      signal.addEventListener('abort', onAbort, { once: true });
      p.promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
    });
  }

  /** Takes an operation that never started out of its queue; a retry of its request id then runs anew. */
  private drop(p: Pending): void {
    const q = this.queues.get(p.key);
    const at = q?.indexOf(p) ?? -1;
    if (q && at > 0) q.splice(at, 1);
    if (p.requestId && this.recent.get(p.requestId) === p) this.recent.delete(p.requestId);
    p.reject(new KybernateError('KYB_ERR_CANCELLED', `${p.kind} of ${p.key}: nobody waits for it any more`));
  }

  private startHead(k: string): void {
    const q = this.queues.get(k);
    const p = q?.[0];
    if (!q || !p || p.started) return;
    p.started = true;
    this.observer.started(p.kind, p.namespace, p.id);
    const t0 = performance.now();
    const finish = (outcome: Omit<OperationOutcome, 'durationMs'>): void => {
      p.endedAt = Date.now();
      q.shift();
      if (q.length === 0) this.queues.delete(k);
      this.observer.done(p.kind, p.namespace, p.id, { ...outcome, durationMs: performance.now() - t0 });
      this.startHead(k);
    };
    // A microtask later: the caller that enqueued it is waiting by then, and run() never throws synchronously.
    void Promise.resolve().then(p.run).then(
      (v) => { finish({ ok: true }); p.resolve(v); },
      (err: unknown) => {
        const e = asKybernateError(err);
        finish({ ok: false, code: e.code, message: e.message });
        p.reject(e);
      },
    );
  }

  /** Forgets ended operations older than the TTL, then the oldest ended ones above the limit. */
  private expire(): void {
    const now = Date.now();
    let excess = this.recent.size - this.limits.entries;
    for (const [id, p] of this.recent) {
      if (p.endedAt === undefined) continue;
      if (now - p.endedAt > this.limits.ttlMs || excess > 0) {
        this.recent.delete(id);
        excess--;
      }
    }
  }
}

const key = (namespace: string, id: string): string => `${namespace}/${id}`;
