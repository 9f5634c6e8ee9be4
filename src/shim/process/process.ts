// The base of init and exec processes: a state object, exit bookkeeping and waiters. Public operations
// run in an operation queue and delegate to the current state; subclasses provide the do* workers. An
// init process runs in its container's queue (operation-queue.ts), so that its Start, Pause, Resume,
// Update, Checkpoint and Delete are ordered with the container's GPU suspend and resume; an exec has a
// queue of its own.
import type { ProcessIO, StdioConfig } from '../io';
import { OperationQueue } from '../operation-queue';
import { CreatedState, type State, type StateHost } from './states';
import type { ExitInfo, StatusName } from './types';

export abstract class Process implements StateHost {
  abstract readonly kind: 'init' | 'exec';
  pid = 0;
  exit?: ExitInfo;
  io?: ProcessIO;
  private state: State = new CreatedState(this);
  private readonly exited: Promise<ExitInfo>;
  private resolveExit!: (e: ExitInfo) => void;

  constructor(readonly id: string, readonly stdio: StdioConfig, readonly queue: OperationQueue = new OperationQueue()) {
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

  start(): Promise<void> { return this.queue.run('start', () => this.state.start()); }
  delete(): Promise<void> { return this.queue.run('delete', () => this.state.delete()); }
  pause(): Promise<void> { return this.queue.run('pause', () => this.pauseInQueue()); }
  resume(): Promise<void> { return this.queue.run('resume', () => this.resumeInQueue()); }
  update(resourcesJson: string): Promise<void> { return this.queue.run('update', () => this.state.update(resourcesJson)); }
  /** Runs `work` (a checkpoint) if the state allows it, in the queue with the other operations. */
  checkpoint<T>(work: () => Promise<T>): Promise<T> { return this.queue.run('checkpoint', () => this.state.checkpoint(work)); }
  /** Pause for work already running in this process's queue (a GPU suspend's freeze). */
  pauseInQueue(): Promise<void> { return this.state.pause(); }
  /** Resume for work already running in this process's queue (a GPU resume's thaw). */
  resumeInQueue(): Promise<void> { return this.state.resume(); }
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
