// GPU suspend in place: a running container's CUDA processes give their device memory back to host
// memory (lock + checkpoint through the driver) and then its cgroup is frozen; resume thaws, then
// restores and unlocks. No CRIU: the processes stay where they are, only the GPU is freed.
//
// Invariants:
// - The driver is never called on a frozen process (it would never return): suspend checkpoints
//   BEFORE the freeze, resume thaws BEFORE the restore.
// - A failed suspend leaves the container running with its GPU state on the GPU; a failed freeze
//   rolls the GPU steps back.
// - c.gpuSuspension is set exactly while the container's CUDA processes hold checkpointed GPU state,
//   with the device memory they held on the GPU (read between lock and checkpoint).
// - Suspend and resume run in the container's one operation queue (operation-queue.ts), with its
//   checkpoints, pauses and updates: none of them overlaps another.
// - A suspend whose processes were killed under it fails as a precondition (the container exited),
//   never as an internal error.
import { performance } from 'node:perf_hooks';
import { KybernateError, errPrecondition } from '../errors';
import {
  GpuStepError, findCudaProcesses, resumeGpuProcesses, suspendGpuProcesses, type CudaApi, type GpuStepName, type GpuSuspend,
} from '../gpu/engine';
import type { Container } from './container';
import { exitedUnder } from './operation-queue';
import { gpuMemoryOf, warmCuda } from '../host/facts';

/** What suspend/resume use of a Container (the class satisfies it). */
export interface SuspendTarget {
  readonly id: string;
  readonly init: Pick<Container['init'], 'status' | 'queue' | 'pauseInQueue' | 'resumeInQueue'> & { readonly pid?: number };
  gpuSuspension: Container['gpuSuspension'];
  pids(): Promise<number[]>;
}

export type ContainerStepName = GpuStepName | 'find' | 'freeze' | 'thaw';

/** One timed step; pid 0 for the steps on the whole container (find, freeze, thaw). */
export interface ContainerStep {
  step: ContainerStepName;
  pid: number;
  ms: number;
}

export interface SuspendOptions {
  /** cuCheckpointProcessLock timeout per process; default 10 s. */
  lockTimeoutMs?: number;
  /** Tests: the CUDA module (default: src/native/cuda, loaded on first use). */
  api?: CudaApi | null;
  /** Device memory the pids use on the GPU (default: nvidia-smi's answer; 0 when unknown). */
  memoryOf?: (pids: number[]) => Promise<number>;
}

export interface SuspendResult {
  id: string;
  /** The CUDA processes whose GPU state was checkpointed. */
  pids: number[];
  /** The container's other processes and why they have no CUDA state. */
  skipped: Array<{ pid: number; why: string }>;
  steps: ContainerStep[];
  since: Date;
  durationMs: number;
  /** Device memory the suspended processes held on the GPU (0 when unknown). */
  deviceMemoryBytes: number;
}

export interface ResumeResult {
  id: string;
  pids: number[];
  steps: ContainerStep[];
  durationMs: number;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

async function timed<T>(steps: ContainerStep[], step: ContainerStepName, fn: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  const out = await fn();
  steps.push({ step, pid: 0, ms: performance.now() - t0 });
  return out;
}

/**
 * Checkpoints the GPU state of every CUDA process of `c`, then freezes its cgroup. Refuses a container
 * that is not running, is suspended already, or has no CUDA process.
 */
export function suspendContainer(c: SuspendTarget, opts: SuspendOptions = {}): Promise<SuspendResult> {
  return c.init.queue.run('suspend', () => exitedUnder(c, 'suspend', () => suspendInQueue(c, opts)));
}

async function suspendInQueue(c: SuspendTarget, opts: SuspendOptions): Promise<SuspendResult> {
  if (c.gpuSuspension) {
    throw new KybernateError('KYB_ERR_GPU_SUSPENDED',
      `container ${c.id} is suspended already (since ${c.gpuSuspension.since.toISOString()})`);
  }
  if (c.init.status !== 'running') throw errPrecondition(`cannot suspend container ${c.id}: it is ${c.init.status}`);
  const t0 = performance.now();
  const steps: ContainerStep[] = [];
  const found = await timed(steps, 'find', async () => findCudaProcesses(await c.pids(), opts.api));
  if (found.cuda.length === 0) {
    const why = found.skipped.map((s) => `${s.pid}: ${s.why}`).join('; ');
    throw errPrecondition(`container ${c.id} has no CUDA processes${why ? ` (${why})` : ''}`);
  }

  // Read while the processes hold their device memory: from the lock on, they submit no new work, and
  // the memory is given back only by the checkpoint that follows.
  const memory = (opts.memoryOf ?? gpuMemoryOf)(found.cuda).catch(() => 0);
  const gpu = await suspendGpuProcesses(found.cuda, { lockTimeoutMs: opts.lockTimeoutMs, api: opts.api, whileLocked: memory });
  steps.push(...gpu.steps);
  try {
    await timed(steps, 'freeze', () => c.init.pauseInQueue());
  } catch (err) {
    await rollbackFreeze(c, gpu, err);
  }
  const since = new Date();
  const deviceMemoryBytes = await memory;
  c.gpuSuspension = { pids: [...gpu.pids], since, deviceMemoryBytes };
  // Lock and checkpoint never run cuInit; the resume's restore does: run it now, not then.
  if (opts.api === undefined) warmCuda();
  return { id: c.id, pids: [...gpu.pids], skipped: found.skipped, steps, since, durationMs: performance.now() - t0, deviceMemoryBytes };
}

/** Undoes the GPU steps of a suspend whose freeze failed, then throws. */
async function rollbackFreeze(c: SuspendTarget, gpu: GpuSuspend, err: unknown): Promise<never> {
  // runc pause thaws again when it cannot freeze, so the processes can run their restore.
  const rollbackErrors = await gpu.rollback();
  let msg = `suspend of container ${c.id}: freeze failed: ${message(err)}; `;
  msg += rollbackErrors.length === 0
    ? 'the GPU state was restored and the container keeps running'
    : `restoring the GPU state failed too: ${rollbackErrors.join('; ')}`;
  throw new KybernateError('KYB_ERR_CHECKPOINT_FAILED', msg, { cause: err });
}

/**
 * Thaws `c` (if frozen), then restores and unlocks its suspended CUDA processes. When some of them
 * fail, the others run again, and `gpuSuspension` keeps only the failed pids, so a second resume
 * retries just those.
 */
export function resumeContainer(c: SuspendTarget, opts: { api?: CudaApi | null } = {}): Promise<ResumeResult> {
  return c.init.queue.run('resume-gpu', () => resumeInQueue(c, opts));
}

/** resumeContainer for work already running in the container's queue (Task.Resume of a suspended container). */
export async function resumeInQueue(c: SuspendTarget, opts: { api?: CudaApi | null } = {}): Promise<ResumeResult> {
  const suspension = c.gpuSuspension;
  if (!suspension) throw errPrecondition(`container ${c.id} is not suspended`);
  const status = c.init.status;
  if (status !== 'paused' && status !== 'running') {
    // Its processes are gone, and their GPU state with them.
    c.gpuSuspension = undefined;
    throw errPrecondition(`container ${c.id} is ${status}; its suspended processes are gone`);
  }
  const t0 = performance.now();
  const steps: ContainerStep[] = [];
  // Running already: someone thawed it (Task.Resume); only the GPU steps are left.
  if (status === 'paused') {
    try {
      await timed(steps, 'thaw', () => c.init.resumeInQueue());
    } catch (err) {
      throw new KybernateError('KYB_ERR_RESTORE_FAILED',
        `resume of container ${c.id}: thaw failed: ${message(err)}; it stays suspended`, { cause: err });
    }
  }
  try {
    steps.push(...(await resumeGpuProcesses(suspension.pids, { api: opts.api })));
  } catch (err) {
    if (err instanceof GpuStepError) {
      c.gpuSuspension = err.unresumed.length > 0 ? { pids: err.unresumed, since: suspension.since } : undefined;
    }
    throw err;
  }
  c.gpuSuspension = undefined;
  return { id: c.id, pids: [...suspension.pids], steps, durationMs: performance.now() - t0 };
}
