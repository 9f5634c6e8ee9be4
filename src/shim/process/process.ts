// The base of init and exec processes: a state object, exit bookkeeping and waiters. Public operations
// are serialised per process and delegate to the current state; subclasses provide the do* workers.
import type { ProcessIO, StdioConfig } from '../io';
import { CreatedState, type State, type StateHost } from './states';
import type { ExitInfo, StatusName } from './types';

export abstract class Process implements StateHost {
  abstract readonly kind: 'init' | 'exec';
  pid = 0;
  exit?: ExitInfo;
  io?: ProcessIO;
  private state: State = new CreatedState(this);
  private queue: Promise<unknown> = Promise.resolve();
  private readonly exited: Promise<ExitInfo>;
  private resolveExit!: (e: ExitInfo) => void;

  constructor(readonly id: string, readonly stdio: StdioConfig) {
    this.exited = new Promise((r) => { this.resolveExit = r; });
  }

  get status(): StatusName { return this.state.name; }

  /**
   * Moves from `from` to `to` only if `from` is still current: an exit that arrived while a worker awaited
   * runc (e.g. the process died during `pause`) must not be overwritten by the worker's late transition.
   */
  transition(from: State, to: State): void {
    if (this.state === from) this.state = to;
  }

  recordExit(exit: ExitInfo): void {
    this.exit = exit;
    this.resolveExit(exit);
  }

  /** Resolves when the process has exited (immediately if it already has). */
  wait(): Promise<ExitInfo> { return this.exited; }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  start(): Promise<void> { return this.serial(() => this.state.start()); }
  delete(): Promise<void> { return this.serial(() => this.state.delete()); }
  pause(): Promise<void> { return this.serial(() => this.state.pause()); }
  resume(): Promise<void> { return this.serial(() => this.state.resume()); }
  update(resourcesJson: string): Promise<void> { return this.serial(() => this.state.update(resourcesJson)); }
  /** Runs `work` (a checkpoint) if the state allows it, serialised with the other operations. */
  checkpoint<T>(work: () => Promise<T>): Promise<T> { return this.serial(() => this.state.checkpoint(work)); }
  /** Kill is not queued behind other operations: it must be able to interrupt a stuck start or pause. */
  kill(signal: number, all: boolean): Promise<void> { return this.state.kill(signal, all); }
  /** Reported by the reaper; legal in every state. */
  setExited(status: number): void { this.state.setExited({ status, exitedAt: new Date() }); }

  abstract doStart(): Promise<void>;
  abstract doDelete(): Promise<void>;
  abstract doKill(signal: number, all: boolean): Promise<void>;
  doPause(): Promise<void> { return Promise.reject(new Error(`${this.kind} processes cannot be paused`)); }
  doResume(): Promise<void> { return Promise.reject(new Error(`${this.kind} processes cannot be resumed`)); }
  doUpdate(_resourcesJson: string): Promise<void> { return Promise.reject(new Error(`${this.kind} processes cannot be updated`)); }
}
