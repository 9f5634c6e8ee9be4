// One workload's gate: it lets requests through while the workload is awake, puts the workload to sleep
// through the agent when it has been idle long enough, and holds requests in a bounded queue while it wakes.
//
// Invariants:
// - A workload is put to sleep only with no request in flight (inFlight counts every request and tunnel
//   from admission to the end of its response), after idleMs without one, not before minRunMs awake, and
//   after a grace period that any new request cancels. Our pooled upstream connections are closed first, so
//   none of them is inside the workload when it is dumped.
// - One wake at a time; held requests are admitted in arrival order once the agent's resume/restore returned
//   and the readiness probe passed, never before.
// - What the workload is doing is asked of the agent (level-based) at every wake and after every failure,
//   so a workload woken or put to sleep by someone else, or an activator restart, is handled as it is.
// - The queue is bounded (limits.queue) and so is each wait (limits.waitMs): over either, 503 + Retry-After.
// - Wakes that fail failAfter times in a row, or with an error that no retry can fix, mark the workload
//   failed: its requests are refused at once instead of starting wake after wake; it leaves that state when
//   the agent reports it running again (asked at most every RECHECK_MS) or the routes are reloaded.
import type { Logger } from 'pino';
import type { GateState, RouteStatus, WakeRecord, WakeStep } from '../activator-api/status';
import { KybernateError, type ErrorCode } from '../errors';
import type { ActivatorMetrics } from './metrics';
import type { RouteConfig } from './routes';
import type { WorkloadAgent } from './workload-agent';

const RECHECK_MS = 5_000;
const RETRY_AFTER_S = 1;
const FAILED_RETRY_AFTER_S = 30;
/** Errors no second wake can fix: the snapshot is bad or gone, or the request was wrong. */
const PERMANENT: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'KYB_ERR_CHECKPOINT_INVALID', 'KYB_ERR_CHECKPOINT_INCOMPATIBLE', 'KYB_ERR_NOT_FOUND', 'KYB_ERR_INVALID_ARGUMENT',
]);

/** A request the gate refuses: the status, a one-line reason for the body, and Retry-After. */
export class Rejection extends Error {
  constructor(readonly status: number, readonly reason: string, readonly outcome: string, readonly retryAfterS?: number) {
    super(reason);
  }
}

interface Waiter {
  at: number;
  resolve(waitedMs: number): void;
  reject(r: Rejection): void;
  timer: NodeJS.Timeout;
}

export interface GateDeps {
  agent: WorkloadAgent;
  /** Closes our pooled connections to the upstream (before a sleep). */
  drain(upstream: string): Promise<void>;
  /** Resolves once the workload's server answers; rejects after route.probe.timeoutMs. */
  probe(route: RouteConfig): Promise<void>;
  metrics: ActivatorMetrics;
  log: Logger;
}

export class Gate {
  private state: GateState = 'unknown';
  private since = Date.now();
  private inFlight = 0;
  private lastActive = Date.now();
  private awakeSince = Date.now();
  private readonly queue: Waiter[] = [];
  private timer: NodeJS.Timeout | undefined;
  private refreshTimer: NodeJS.Timeout | undefined;
  private failures = 0;
  private reason: string | undefined;
  private lastWake: WakeRecord | undefined;
  private lastSleep: RouteStatus['lastSleep'];
  private lastRecheck = 0;
  private closed = false;

  constructor(public route: RouteConfig, private readonly deps: GateDeps) {
    // A workload that never sleeps is never woken either: its requests go straight through, agent or not.
    if (route.sleep.kind === 'never') this.state = 'awake';
  }

  /** The warm path: admits the request at once when the workload is awake (a drain in progress is cancelled). */
  tryEnter(): boolean {
    if (this.state === 'draining') {
      clearTimeout(this.timer);
      this.set('awake');
    } else if (this.state !== 'awake') {
      return false;
    }
    this.inFlight++;
    return true;
  }

  /** The slow path: resolves with the ms waited once admitted, or rejects with a Rejection. */
  wait(signal?: AbortSignal): Promise<number> {
    if (this.tryEnter()) return Promise.resolve(0);
    if (this.state === 'failed') {
      this.recheck();
      return Promise.reject(new Rejection(503, `workload ${this.workloadName()} failed to wake: ${this.reason}`, 'failed', FAILED_RETRY_AFTER_S));
    }
    if (this.queue.length >= this.route.limits.queue) {
      return Promise.reject(new Rejection(503, `too many requests are waiting for workload ${this.workloadName()} to wake (limit ${this.route.limits.queue})`, 'queue_full', RETRY_AFTER_S));
    }
    return new Promise<number>((resolve, reject) => {
      const w: Waiter = {
        at: Date.now(),
        resolve,
        reject,
        timer: setTimeout(() => {
          this.dequeue(w);
          reject(new Rejection(503, `waited ${this.route.limits.waitMs} ms for workload ${this.workloadName()} to wake`, 'wait_timeout', RETRY_AFTER_S));
        }, this.route.limits.waitMs),
      };
      this.queue.push(w);
      this.deps.metrics.held(this.route.name, this.queue.length);
      signal?.addEventListener('abort', () => {
        if (this.dequeue(w)) reject(new Rejection(499, 'the client went away while waiting', 'client_aborted'));
      }, { once: true });
      if (this.state === 'asleep' || this.state === 'unknown') void this.wake();
    });
  }

  /** The end of an admitted request's response (or tunnel). */
  leave(): void {
    this.inFlight--;
    this.lastActive = Date.now();
    if (this.inFlight === 0 && this.state === 'awake') this.armIdle();
  }

  /** Learns the workload's state from the agent (start, reload); never wakes or sleeps anything. */
  async refresh(): Promise<void> {
    if (this.state !== 'unknown' && this.state !== 'awake') return;
    try {
      const state = await this.deps.agent.state(this.route.workload);
      if (this.closed || (this.state !== 'unknown' && this.state !== 'awake')) return;
      if (state === 'running') {
        if (this.state === 'unknown') this.becomeAwake();
      } else if (state === 'suspended' || state === 'checkpointed') {
        if (this.inFlight === 0) this.set('asleep');
      }
    } catch (err) {
      this.deps.log.warn({ route: this.route.name, err: (err as Error).message }, 'cannot ask the agent for the workload\'s state');
      if (this.state === 'unknown' && !this.closed) this.scheduleRefresh();
    }
  }

  /**
   * The upstream failed a request of an awake workload (refused, or no answer in time): perhaps someone put the
   * workload to sleep behind our back. The agent is asked (at most every RECHECK_MS), so the next request wakes it.
   */
  upstreamFailed(): void {
    if (this.state !== 'awake' || Date.now() - this.lastRecheck < RECHECK_MS) return;
    this.lastRecheck = Date.now();
    void this.refresh();
  }

  /** New settings for the same workload (a reload): the next timers use them; a failed workload is retried. */
  update(route: RouteConfig): void {
    this.route = route;
    if (route.sleep.kind === 'never' && this.state === 'unknown') this.becomeAwake();
    if (this.state === 'failed') {
      this.failures = 0;
      this.set('unknown');
    }
    if (this.state === 'awake' && this.inFlight === 0) this.armIdle();
  }

  /** The route is gone: held requests are refused; requests in flight finish. */
  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    clearTimeout(this.refreshTimer);
    this.rejectAll(new Rejection(503, `the route ${this.route.name} was removed`, 'route_removed'));
  }

  status(): RouteStatus {
    const r = this.route;
    return {
      name: r.name, host: r.host, pathPrefix: r.pathPrefix, namespace: r.workload.namespace, id: r.workload.id, upstream: r.upstream,
      sleepKind: r.sleep.kind, state: this.state, since: new Date(this.since).toISOString(), inFlight: this.inFlight, held: this.queue.length,
      failures: this.failures, reason: this.reason, lastWake: this.lastWake, lastSleep: this.lastSleep,
    };
  }

  private set(state: GateState): void {
    if (state === 'unknown' && !this.closed) this.scheduleRefresh();
    if (state === this.state) return;
    this.deps.log.debug({ route: this.route.name, from: this.state, to: state }, 'state');
    this.state = state;
    this.since = Date.now();
    this.deps.metrics.state(this.route.name, state);
  }

  /** While unknown (the agent did not answer, a sleep failed), the state is asked for again every RECHECK_MS. */
  private scheduleRefresh(): void {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => {
      if (this.state !== 'unknown' || this.closed) return;
      void this.refresh().then(() => { if (this.state === 'unknown') this.scheduleRefresh(); });
    }, RECHECK_MS);
    this.refreshTimer.unref();
  }

  private becomeAwake(): void {
    this.set('awake');
    this.awakeSince = Date.now();
    this.lastActive = this.awakeSince;
    if (this.inFlight === 0) this.armIdle();
  }

  private armIdle(): void {
    if (this.route.sleep.kind === 'never' || this.closed) return;
    const due = Math.max(this.lastActive + this.route.sleep.idleMs, this.awakeSince + this.route.sleep.minRunMs);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.onIdle(), Math.max(0, due - Date.now()));
    this.timer.unref();
  }

  private onIdle(): void {
    if (this.state !== 'awake' || this.inFlight > 0) return;
    const due = Math.max(this.lastActive + this.route.sleep.idleMs, this.awakeSince + this.route.sleep.minRunMs);
    if (Date.now() < due) {
      this.armIdle();
      return;
    }
    this.set('draining');
    this.timer = setTimeout(() => void this.sleep(), this.route.sleep.graceMs);
    this.timer.unref();
  }

  private async sleep(): Promise<void> {
    if (this.state !== 'draining' || this.inFlight > 0) return;
    const kind = this.route.sleep.kind;
    this.set('sleeping');
    const started = Date.now();
    const at = new Date(started).toISOString();
    try {
      await this.deps.drain(this.route.upstream);
      if (kind === 'suspend') await this.deps.agent.suspend(this.route.workload);
      else await this.deps.agent.checkpoint(this.route.workload);
      const ms = Date.now() - started;
      this.lastSleep = { at, kind, ok: true, ms };
      this.deps.metrics.slept(this.route.name, kind, 'ok');
      this.deps.log.info({ route: this.route.name, kind, ms }, 'workload asleep');
      this.set('asleep');
    } catch (err) {
      const e = err as Error;
      this.lastSleep = { at, kind, ok: false, ms: Date.now() - started, error: e.message };
      this.deps.metrics.slept(this.route.name, kind, codeOf(err));
      this.deps.log.warn({ route: this.route.name, kind, err: e.message }, 'cannot put the workload to sleep');
      // The agent leaves a workload running or asleep, never half-way; which one, the next wake asks.
      this.set('unknown');
      if (this.queue.length === 0) void this.refresh();
    }
    if (this.queue.length > 0 && !this.closed) void this.wake();
  }

  private async wake(): Promise<void> {
    if (this.state !== 'asleep' && this.state !== 'unknown') return;
    this.set('waking');
    const started = Date.now();
    const steps: WakeStep[] = [];
    const step = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
      const t = Date.now();
      try {
        return await fn();
      } finally {
        steps.push({ name, ms: Date.now() - t });
      }
    };
    let from = 'unknown';
    try {
      const state = await step('agent-get', () => this.deps.agent.state(this.route.workload));
      from = state === 'suspended' ? 'suspend' : state === 'checkpointed' ? 'checkpoint' : state;
      if (state === 'suspended') steps.push(...prefixed('resume', await step('resume', () => this.deps.agent.resume(this.route.workload))));
      else if (state === 'checkpointed') steps.push(...prefixed('restore', await step('restore', () => this.deps.agent.restore(this.route.workload))));
      else if (state === 'paused') throw new KybernateError('KYB_ERR_FAILED_PRECONDITION', 'the workload is paused (Task.Pause) by someone else: resume it with `ctr task resume`');
      else if (state === 'stopped') throw new KybernateError('KYB_ERR_NOT_FOUND', 'the workload is stopped and has no snapshot to restore');
      await step('probe', () => this.deps.probe(this.route));
    } catch (err) {
      this.wakeFailed(err, from, started, steps);
      return;
    }
    const ms = Date.now() - started;
    this.failures = 0;
    this.reason = undefined;
    this.lastWake = { at: new Date(started).toISOString(), from, ok: true, ms, steps, held: this.queue.length };
    this.deps.metrics.woke(this.route.name, from, 'ok', ms / 1000);
    this.deps.log.info({ route: this.route.name, from, ms, steps, held: this.queue.length }, 'workload awake');
    this.becomeAwake();
    const now = Date.now();
    for (const w of this.queue.splice(0)) {
      clearTimeout(w.timer);
      this.inFlight++;
      w.resolve(now - w.at);
    }
    this.deps.metrics.held(this.route.name, 0);
  }

  private wakeFailed(err: unknown, from: string, started: number, steps: WakeStep[]): void {
    const code = codeOf(err);
    const message = (err as Error).message;
    const ms = Date.now() - started;
    const agentDown = code === 'KYB_ERR_UNAVAILABLE';
    // The agent being down says nothing about the workload: it does not count towards failed.
    if (!agentDown) this.failures++;
    const failed = !agentDown && (this.failures >= this.route.failAfter || PERMANENT.has(code as ErrorCode));
    this.reason = message;
    this.lastWake = { at: new Date(started).toISOString(), from, ok: false, ms, steps, held: this.queue.length, error: message };
    this.deps.metrics.woke(this.route.name, from, code, ms / 1000);
    this.deps.log.warn({ route: this.route.name, from, code, err: message, failures: this.failures, failed }, 'cannot wake the workload');
    this.set(failed ? 'failed' : 'unknown');
    if (failed) this.lastRecheck = Date.now();
    const what = agentDown ? 'the kybernate agent is unreachable' : `workload ${this.workloadName()} failed to wake`;
    this.rejectAll(new Rejection(503, `${what}: ${message}`, agentDown ? 'agent_unavailable' : 'wake_failed', failed ? FAILED_RETRY_AFTER_S : RETRY_AFTER_S));
  }

  /** failed → awake when the agent says the workload runs again (someone fixed it); at most every RECHECK_MS. */
  private recheck(): void {
    if (Date.now() - this.lastRecheck < RECHECK_MS) return;
    this.lastRecheck = Date.now();
    this.deps.agent.state(this.route.workload).then(async (state) => {
      if (state !== 'running' || this.state !== 'failed') return;
      await this.deps.probe(this.route);
      if (this.state !== 'failed') return;
      this.failures = 0;
      this.reason = undefined;
      this.becomeAwake();
    }).catch(() => {});
  }

  private dequeue(w: Waiter): boolean {
    const i = this.queue.indexOf(w);
    if (i === -1) return false;
    clearTimeout(w.timer);
    this.queue.splice(i, 1);
    this.deps.metrics.held(this.route.name, this.queue.length);
    return true;
  }

  private rejectAll(r: Rejection): void {
    for (const w of this.queue.splice(0)) {
      clearTimeout(w.timer);
      w.reject(r);
    }
    this.deps.metrics.held(this.route.name, 0);
  }

  private workloadName(): string {
    return `${this.route.workload.namespace}/${this.route.workload.id}`;
  }
}

function codeOf(err: unknown): string {
  return KybernateError.is(err) ? err.code : 'KYB_ERR_INTERNAL';
}

function prefixed(prefix: string, steps: WakeStep[]): WakeStep[] {
  return steps.map((s) => ({ name: `${prefix}/${s.name}`, ms: s.ms }));
}
