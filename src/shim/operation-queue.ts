// One operation queue per container: Checkpoint, Restore (the init's Start), Suspend, Resume (of the
// GPU and of the cgroup), Pause, Update, Start and Delete of the init run one at a time, in the order
// they arrived.
//
// Invariants:
// - At most one queued operation of a container runs at any time: two of them never lock, checkpoint,
//   freeze or dump the same processes at once, and each finds the container as the previous one left it.
// - A failed operation does not stop the queue: the next one runs on whatever state it left.
// - Not queued, so that they answer while a long operation runs: Kill (it ends a long operation, whose
//   driver calls and CRIU fail on the dead processes), State, Pids, Stats, Wait and the Control
//   service's Status. Delete waits in the queue: after a Kill it waits only for the operation in flight
//   to unwind.
// - Work that already runs in the queue never queues again (it would wait for itself): it calls the
//   process's *InQueue methods.
import { KybernateError } from '../errors';
import { alive } from '../host/process';

export class OperationQueue {
  private tail: Promise<void> = Promise.resolve();
  private running: string | undefined;
  private waiting = 0;

  /** Runs `fn` once every operation queued before it has settled. */
  run<T>(op: string, fn: () => Promise<T>): Promise<T> {
    this.waiting++;
    const start = async (): Promise<T> => {
      this.waiting--;
      this.running = op;
      try {
        return await fn();
      } finally {
        this.running = undefined;
      }
    };
    const next = this.tail.then(start);
    this.tail = next.then(() => undefined, () => undefined);
    return next;
  }

  /** The operation running now, if any. */
  get current(): string | undefined { return this.running; }

  /** How many operations wait behind the current one. */
  get queued(): number { return this.waiting; }
}

/** What exitedUnder reads of a container. */
export interface OperationTarget {
  readonly id: string;
  readonly init: { readonly status: string; readonly pid?: number };
  gpuSuspension: unknown;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Runs `work`; when it fails because the container exited under it (a Kill while it ran), the failure
 * says so as a precondition, never as an internal error: nothing is left to suspend or resume.
 */
export async function exitedUnder<T>(c: OperationTarget, verb: string, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    if (KybernateError.is(err) && err.code === 'KYB_ERR_FAILED_PRECONDITION') throw err;
    const status = c.init.status;
    // The init's death may not be reaped yet when the work failed: its /proc entry tells.
    const gone = status === 'stopped' || status === 'deleted' || (c.init.pid !== undefined && c.init.pid > 0 && !alive(c.init.pid));
    if (!gone) throw err;
    c.gpuSuspension = undefined;
    throw new KybernateError('KYB_ERR_FAILED_PRECONDITION',
      `${verb} of container ${c.id}: the container exited meanwhile (${message(err)})`, { cause: err });
  }
}

