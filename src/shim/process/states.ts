// Process states as objects (the runc shim's pattern): each state decides which operations are legal and
// which state follows. An illegal call is a FailedPrecondition naming the operation and the state; a
// process that is gone is NotFound, as containerd expects ("process already finished").
import { KybernateError, errNotFound } from '../../errors';
import type { ExitInfo, ProcessOps, StatusName } from './types';

/** What a state may ask of its process: the workers that do the actual work, and the transition. */
export interface StateHost {
  readonly kind: 'init' | 'exec';
  transition(from: State, to: State): void;
  doStart(): Promise<void>;
  doDelete(): Promise<void>;
  doPause(): Promise<void>;
  doResume(): Promise<void>;
  doUpdate(resourcesJson: string): Promise<void>;
  doKill(signal: number, all: boolean): Promise<void>;
  recordExit(exit: ExitInfo): void;
}

// Every operation is async, so that a refusal is a rejected promise, never a synchronous throw.
export abstract class State implements ProcessOps {
  abstract readonly name: StatusName;
  constructor(protected readonly p: StateHost) {}

  protected refuse(op: string): never {
    throw new KybernateError('KYB_ERR_FAILED_PRECONDITION', `cannot ${op} ${this.p.kind} process in ${this.name} state`);
  }
  async start(): Promise<void> { this.refuse('start'); }
  async delete(): Promise<void> { this.refuse('delete'); }
  async pause(): Promise<void> { this.refuse('pause'); }
  async resume(): Promise<void> { this.refuse('resume'); }
  async update(_resourcesJson: string): Promise<void> { this.refuse('update'); }
  async kill(_signal: number, _all: boolean): Promise<void> { this.refuse('kill'); }
  /** Checkpoints need a live process; `work` does the dump and leaves the state as it found it. */
  async checkpoint<T>(_work: () => Promise<T>): Promise<T> { this.refuse('checkpoint'); }
  /** An exit is a fact, legal in every state that has a live process. */
  setExited(exit: ExitInfo): void {
    this.p.recordExit(exit);
    this.p.transition(this, new StoppedState(this.p));
  }
}

export class CreatedState extends State {
  readonly name = 'created';
  async start(): Promise<void> {
    await this.p.doStart();
    this.p.transition(this, new RunningState(this.p));
  }
  async delete(): Promise<void> {
    await this.p.doDelete();
    this.p.transition(this, new DeletedState(this.p));
  }
  async update(r: string): Promise<void> { await this.p.doUpdate(r); }
  async kill(signal: number, all: boolean): Promise<void> {
    // An exec that was never started has no process to signal.
    if (this.p.kind === 'exec') throw errNotFound('process not started');
    await this.p.doKill(signal, all);
  }
}

export class RunningState extends State {
  readonly name = 'running';
  async pause(): Promise<void> {
    if (this.p.kind === 'exec') this.refuse('pause');
    await this.p.doPause();
    this.p.transition(this, new PausedState(this.p));
  }
  async update(r: string): Promise<void> { await this.p.doUpdate(r); }
  async kill(signal: number, all: boolean): Promise<void> { await this.p.doKill(signal, all); }
  async checkpoint<T>(work: () => Promise<T>): Promise<T> {
    if (this.p.kind === 'exec') this.refuse('checkpoint');
    return work();
  }
}

export class PausedState extends State {
  readonly name = 'paused';
  async resume(): Promise<void> {
    await this.p.doResume();
    this.p.transition(this, new RunningState(this.p));
  }
  async update(r: string): Promise<void> { await this.p.doUpdate(r); }
  async kill(signal: number, all: boolean): Promise<void> { await this.p.doKill(signal, all); }
  async checkpoint<T>(work: () => Promise<T>): Promise<T> { return work(); }
}

export class StoppedState extends State {
  readonly name = 'stopped';
  async delete(): Promise<void> {
    await this.p.doDelete();
    this.p.transition(this, new DeletedState(this.p));
  }
  async kill(_signal: number, all: boolean): Promise<void> {
    // `kill --all` of a stopped container still reaps stray processes of a shared pid namespace.
    if (all && this.p.kind === 'init') { await this.p.doKill(9, true).catch(() => undefined); return; }
    throw errNotFound('process already finished');
  }
  setExited(_exit: ExitInfo): void { /* a second exit report for the same pid is ignored */ }
}

export class DeletedState extends State {
  readonly name = 'deleted';
  protected refuse(op: string): never {
    throw errNotFound(`cannot ${op} a deleted process`);
  }
  setExited(_exit: ExitInfo): void { /* nothing left to record */ }
}
