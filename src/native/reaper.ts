// The shim's one place for child exits. The native reaper thread reaps every child of this process
// (we are the containers' subreaper); each exit either settles the waiter that spawn() registered or,
// for pids nobody spawned here (container processes re-parented to us), is emitted as 'exit'.
import { EventEmitter } from 'node:events';
import { KybernateError } from '../errors';
import * as native from './index';

/** How a process ended: status is the exit code, or 128+signal when killed (signal is then non-zero). */
export interface ExitStatus {
  status: number;
  signal: number;
}

export interface ExitEvent extends ExitStatus {
  pid: number;
}

export interface Spawned {
  pid: number;
  /** Settles when the reaper reaps pid; never rejects. */
  exited: Promise<ExitStatus>;
}

/** Owns the native reaper. Use the `reaper` singleton: there is one reaper per process. */
export class Reaper extends EventEmitter<{ exit: [ExitEvent] }> {
  #started = false;
  readonly #waiters = new Map<number, (e: ExitStatus) => void>();

  get started(): boolean {
    return this.#started;
  }

  /** Pids spawned here whose exit has not arrived yet. */
  get pending(): number {
    return this.#waiters.size;
  }

  /** Becomes the child subreaper and starts the reaper thread. Idempotent. */
  start(): void {
    if (this.#started) return;
    native.setSubreaper();
    native.startReaper((pid, status, signal) => this.#onExit(pid, status, signal));
    this.#started = true;
    if (this.#waiters.size > 0) native.reaperRef(true);
  }

  /** Stops the thread (tests). Waiters stay registered and settle if the reaper is started again. */
  stop(): void {
    if (!this.#started) return;
    native.stopReaper();
    this.#started = false;
  }

  /**
   * Spawns a process and registers its waiter before returning: exits reach JS only through the event
   * loop, so none can arrive between spawn and registration.
   */
  spawn(opts: native.SpawnOptions): Spawned {
    if (!this.#started) {
      throw new KybernateError('KYB_ERR_FAILED_PRECONDITION', 'reaper.spawn: the reaper is not started');
    }
    const pid = native.spawn(opts);
    const exited = new Promise<ExitStatus>((resolve) => {
      this.#waiters.set(pid, resolve);
    });
    // An exit someone awaits must keep the process alive; the reaper is unref'd otherwise.
    if (this.#waiters.size === 1) native.reaperRef(true);
    return { pid, exited };
  }

  #onExit(pid: number, status: number, signal: number): void {
    const waiter = this.#waiters.get(pid);
    if (waiter === undefined) {
      this.emit('exit', { pid, status, signal });
      return;
    }
    this.#waiters.delete(pid);
    if (this.#waiters.size === 0) native.reaperRef(false);
    waiter({ status, signal });
  }
}

/** The process-wide reaper. */
export const reaper = new Reaper();
