// The GPU engine: the CUDA half of every checkpoint, for any number of processes — find which pids
// have CUDA state, lock them all, then checkpoint them all; and the reverse, restore all, then unlock
// all. Its one caller per path: GPU suspend in place (src/shim/suspend.ts), the container checkpoint
// and restore (src/shim/checkpoint.ts, src/shim/process/restore.ts) and the process-tree path
// (src/criu/process.ts). Every caller gets the same steps, named and timed per pid (GpuStep).
//
// Invariants:
// - Every pid is locked before any is checkpointed: a multi-process job (NCCL) must stop submitting
//   work everywhere before any of its processes lets go of its device memory.
// - A failed suspend leaves every pid as it found it (RUNNING, GPU state on the GPU): what was done is
//   undone before the error is thrown, and the error names the step and the pid that failed.
// - No call here may target a frozen or stopped process: the driver does the work on a thread inside
//   the target and never returns otherwise (the addon refuses such targets with KYB_ERR_CUDA_FROZEN).
//   So: suspend, then freeze; thaw, then resume.
import { performance } from 'node:perf_hooks';
import { KybernateError, type ErrorCode } from '../errors';
import { loadCuda, type CudaApi } from './driver';

export type { CudaApi } from './driver';

export type GpuStepName = 'cuda-lock' | 'cuda-checkpoint' | 'cuda-restore' | 'cuda-unlock';

export interface GpuStep {
  step: GpuStepName;
  pid: number;
  ms: number;
}

const DEFAULT_LOCK_TIMEOUT_MS = 10_000;

/** A failed multi-process CUDA step, after its rollback. */
export class GpuStepError extends KybernateError {
  readonly step: GpuStepName;
  readonly pid: number;
  /** Steps that completed before the failure (rollback steps are not listed). */
  readonly steps: GpuStep[];
  /** Rollback steps that failed too: those processes may have lost their GPU state or stay locked. */
  readonly rollbackErrors: string[];
  /** resume only: pids not back to RUNNING (their GPU state is still checkpointed or they are locked). */
  readonly unresumed: number[];
  constructor(code: ErrorCode, message: string, info: {
    step: GpuStepName; pid: number; steps: GpuStep[]; cause: unknown; rollbackErrors?: string[]; unresumed?: number[];
  }) {
    super(code, message, { cause: info.cause });
    this.name = 'GpuStepError';
    this.step = info.step;
    this.pid = info.pid;
    this.steps = info.steps;
    this.rollbackErrors = info.rollbackErrors ?? [];
    this.unresumed = info.unresumed ?? [];
  }
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

async function load(api: CudaApi | null | undefined): Promise<CudaApi | string> {
  if (api === null) return 'CUDA disabled';
  return (api ?? (await loadCuda())) as CudaApi | string;
}

/**
 * Which of `pids` have CUDA state: those for which the driver names a restore thread (CRIU's test
 * too). Without a usable driver every pid is skipped with the reason. The pids must not be frozen or
 * stopped when this is called: such a pid is refused by the addon, and that refusal rejects here
 * (KYB_ERR_FAILED_PRECONDITION) instead of passing it off as "no CUDA state". A pid that exited
 * meanwhile is skipped.
 */
export async function findCudaProcesses(pids: number[], api?: CudaApi | null): Promise<{
  cuda: number[]; skipped: Array<{ pid: number; why: string }>;
}> {
  const cuda = await load(api);
  if (typeof cuda === 'string') return { cuda: [], skipped: pids.map((pid) => ({ pid, why: cuda })) };
  const found = await Promise.all(pids.map(async (pid): Promise<{ pid: number; why: string | undefined }> => {
    try {
      await cuda.getRestoreThreadId(pid);
      return { pid, why: undefined };
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'KYB_ERR_CUDA_FROZEN' || code === 'KYB_ERR_CUDA_HUNG') {
        throw new KybernateError('KYB_ERR_FAILED_PRECONDITION',
          `cannot tell whether pid ${pid} has CUDA state: ${message(err)}`, { cause: err });
      }
      if (code === 'KYB_ERR_CUDA_NO_DRIVER' || code === 'KYB_ERR_CUDA_DRIVER_TOO_OLD') return { pid, why: message(err) };
      if (code === 'ESRCH') return { pid, why: 'exited' };
      return { pid, why: `no CUDA state (${message(err)})` };
    }
  }));
  return {
    cuda: found.filter((f) => f.why === undefined).map((f) => f.pid),
    skipped: found.flatMap((f) => (f.why === undefined ? [] : [{ pid: f.pid, why: f.why }])),
  };
}

export interface GpuSuspend {
  /** The pids whose GPU state is checkpointed (locked + checkpointed). */
  readonly pids: number[];
  readonly steps: GpuStep[];
  /** Restores and unlocks every pid again (they must be able to run); returns the failures. */
  rollback(): Promise<string[]>;
}

/** Runs `fn` for every pid at once; records each success in `steps`; resolves to the failures in pid order. */
async function each(pids: number[], step: GpuStepName, steps: GpuStep[], fn: (pid: number) => Promise<void>):
  Promise<Array<{ pid: number; err: unknown }>> {
  const results = await Promise.all(pids.map(async (pid) => {
    const t0 = performance.now();
    try {
      await fn(pid);
    } catch (err) {
      return { pid, err };
    }
    steps.push({ step, pid, ms: performance.now() - t0 });
    return undefined;
  }));
  return results.filter((r): r is { pid: number; err: unknown } => r !== undefined);
}

/** Restores `checkpointed`, then unlocks those plus `locked`; a pid whose restore failed is not unlocked. */
async function undo(cuda: CudaApi, checkpointed: number[], locked: number[]): Promise<string[]> {
  const errors: string[] = [];
  const unlock = new Set(locked);
  for (const f of await each(checkpointed, 'cuda-restore', [], (pid) => cuda.restore(pid))) {
    errors.push(`cuda-restore pid ${f.pid}: ${message(f.err)}`);
    unlock.delete(f.pid); // an unlock of a checkpointed process fails anyway
  }
  for (const f of await each([...unlock], 'cuda-unlock', [], (pid) => cuda.unlock(pid))) {
    errors.push(`cuda-unlock pid ${f.pid}: ${message(f.err)}`);
  }
  return errors;
}

/** The state a failed step left `pid` in, when the API can tell; undefined otherwise. */
async function stateOf(cuda: CudaApi, pid: number): Promise<string | undefined> {
  return cuda.getState ? cuda.getState(pid).catch(() => undefined) : undefined;
}

function failure(code: ErrorCode, verb: string, f: { pid: number; err: unknown }, step: GpuStepName, steps: GpuStep[],
  rollbackErrors: string[], extra: { unresumed?: number[]; tail?: string } = {}): GpuStepError {
  let msg = `${step} failed for pid ${f.pid}: ${message(f.err)}`;
  if (extra.tail) msg += `; ${extra.tail}`;
  if (rollbackErrors.length > 0) msg += ` (rollback failed: ${rollbackErrors.join('; ')})`;
  return new GpuStepError(code, `${verb}: ${msg}`, {
    step, pid: f.pid, steps, cause: f.err, rollbackErrors, unresumed: extra.unresumed,
  });
}

/**
 * Locks every pid (in parallel), then checkpoints every pid (in parallel: two processes at once move
 * about twice the data per second). Freeze the processes only after this resolves. On a failure
 * everything done is undone, then a GpuStepError KYB_ERR_CHECKPOINT_FAILED naming the step and pid is
 * thrown.
 */
export async function suspendGpuProcesses(pids: number[], opts: {
  lockTimeoutMs?: number; api?: CudaApi | null;
  /**
   * Awaited between lock-all and checkpoint-all: work that needs the GPU state still on the GPU but the
   * processes quiet (reading their device memory use). It runs from the start of the lock step; a
   * rejection is the caller's to handle (it does not fail the suspend).
   */
  whileLocked?: Promise<unknown>;
}): Promise<GpuSuspend> {
  const steps: GpuStep[] = [];
  const verb = `GPU suspend of pid${pids.length === 1 ? '' : 's'} ${pids.join(', ')}`;
  const cuda = await load(opts.api);
  if (typeof cuda === 'string') {
    if (pids.length > 0) {
      throw failure('KYB_ERR_CHECKPOINT_FAILED', verb, { pid: pids[0], err: new Error(cuda) }, 'cuda-lock', steps, []);
    }
    return { pids: [], steps, rollback: async () => [] };
  }
  const lockTimeoutMs = opts.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;

  const lockFailed = await each(pids, 'cuda-lock', steps, (pid) => cuda.lock(pid, lockTimeoutMs));
  if (lockFailed.length > 0) {
    // A lock that failed (timeout, error) leaves its process RUNNING (driver documentation).
    const failedPids = new Set(lockFailed.map((f) => f.pid));
    const rollbackErrors = await undo(cuda, [], pids.filter((p) => !failedPids.has(p)));
    throw failure('KYB_ERR_CHECKPOINT_FAILED', verb, lockFailed[0], 'cuda-lock', steps, rollbackErrors,
      { tail: 'every process was unlocked again and keeps running' });
  }

  await opts.whileLocked?.catch(() => undefined);
  const checkpointFailed = await each(pids, 'cuda-checkpoint', steps, (pid) => cuda.checkpoint(pid));
  if (checkpointFailed.length > 0) {
    const failedPids = new Set(checkpointFailed.map((f) => f.pid));
    const checkpointed = pids.filter((p) => !failedPids.has(p));
    const locked = [...checkpointed];
    // The driver's state after a failed checkpoint is not documented: ask, where the API can.
    for (const pid of failedPids) {
      const s = await stateOf(cuda, pid);
      if (s === 'checkpointed') checkpointed.push(pid);
      if (s === undefined || s === 'locked' || s === 'checkpointed') locked.push(pid);
    }
    const rollbackErrors = await undo(cuda, checkpointed, locked);
    throw failure('KYB_ERR_CHECKPOINT_FAILED', verb, checkpointFailed[0], 'cuda-checkpoint', steps, rollbackErrors,
      { tail: 'the GPU state of the other processes was restored and every process unlocked' });
  }

  let undone = false;
  return {
    pids: [...pids],
    steps,
    async rollback() {
      if (undone) return [];
      undone = true;
      return undo(cuda, pids, pids);
    },
  };
}

/**
 * Restores every pid (in parallel), then unlocks every pid. Thaw the processes before calling this.
 * A failure rejects with GpuStepError KYB_ERR_RESTORE_FAILED naming the step and pid, after the other
 * processes were unlocked (so they run again); `unresumed` lists the pids that are not RUNNING. A pid
 * found LOCKED or RUNNING already (an earlier resume got that far) takes the steps that remain.
 */
export async function resumeGpuProcesses(pids: number[], opts: { api?: CudaApi | null }): Promise<GpuStep[]> {
  const steps: GpuStep[] = [];
  const verb = `GPU resume of pid${pids.length === 1 ? '' : 's'} ${pids.join(', ')}`;
  const cuda = await load(opts.api);
  if (typeof cuda === 'string') {
    if (pids.length > 0) {
      throw failure('KYB_ERR_RESTORE_FAILED', verb, { pid: pids[0], err: new Error(cuda) }, 'cuda-restore', steps, [],
        { unresumed: [...pids] });
    }
    return steps;
  }

  const unlockable = new Set(pids);
  const failed: Array<{ pid: number; err: unknown; step: GpuStepName }> = [];
  for (const f of await each(pids, 'cuda-restore', steps, (pid) => cuda.restore(pid))) {
    const s = await stateOf(cuda, f.pid);
    if (s === 'locked') continue; // restored by an earlier attempt
    unlockable.delete(f.pid);
    if (s !== 'running') failed.push({ ...f, step: 'cuda-restore' });
  }
  for (const f of await each([...unlockable], 'cuda-unlock', steps, (pid) => cuda.unlock(pid))) {
    if ((await stateOf(cuda, f.pid)) !== 'running') failed.push({ ...f, step: 'cuda-unlock' });
  }
  if (failed.length > 0) {
    failed.sort((a, b) => pids.indexOf(a.pid) - pids.indexOf(b.pid));
    const unresumed = failed.map((f) => f.pid);
    const others = pids.length > unresumed.length ? '; the other processes run again' : '';
    throw failure('KYB_ERR_RESTORE_FAILED', verb, failed[0], failed[0].step, steps, [],
      { unresumed, tail: `pid${unresumed.length === 1 ? '' : 's'} ${unresumed.join(', ')} not resumed${others}` });
  }
  return steps;
}
