// The CUDA half of a process checkpoint: lock + checkpoint before the CRIU dump, restore + unlock after
// the CRIU restore (or after a dump that leaves the process running), and the rollback of a partial
// suspend. src/native/cuda is imported on first use, so a build without it still checkpoints
// non-CUDA processes.
import { performance } from 'node:perf_hooks';
import type { Step, StepName } from '../criu/process';

/** The part of src/native/cuda this module uses. */
export interface CudaApi {
  getRestoreThreadId(pid: number): Promise<number>;
  lock(pid: number, timeoutMs: number): Promise<void>;
  checkpoint(pid: number): Promise<void>;
  restore(pid: number): Promise<void>;
  unlock(pid: number): Promise<void>;
}

/** src/native/cuda, or why it cannot be used. */
export async function loadCuda(): Promise<CudaApi | string> {
  try {
    const mod = (await import('../native/cuda')) as unknown as CudaApi;
    return mod;
  } catch (err) {
    return `CUDA support not built (${err instanceof Error ? err.message : String(err)})`;
  }
}

export interface CudaSteps {
  /** Whether the process has CUDA state and the steps run. */
  readonly active: boolean;
  /** Why they do not, when they do not. */
  readonly skipped?: string;
  /** The step that failed last. */
  failedStep?: StepName;
  suspend(lockTimeoutMs: number): Promise<void>;
  resume(pid: number): Promise<void>;
  /** Undoes a partial or complete suspend; returns the messages of rollback steps that failed. */
  rollback(): Promise<string[]>;
}

/**
 * Decides whether pid has CUDA state (as CRIU's plugin does: it has a restore thread) and returns its
 * steps. With `known` (restore of a CUDA checkpoint) detection is skipped and failures are real.
 */
export async function cudaSteps(pid: number, api: CudaApi | null | undefined, steps: Step[], known = false): Promise<CudaSteps> {
  const loaded = api === null ? 'CUDA disabled' : api ?? (await loadCuda());
  if (typeof loaded === 'string') {
    if (known) throw new Error(`the checkpoint holds GPU state but ${loaded}`);
    return inactive(loaded);
  }
  const cuda = loaded;
  if (!known) {
    try {
      await cuda.getRestoreThreadId(pid);
    } catch (err) {
      const e = err as { code?: string; message?: string };
      const why = e.code === 'KYB_ERR_CUDA_NO_DRIVER' ? 'CUDA driver not found' : `no CUDA state (${e.message ?? String(err)})`;
      return inactive(why);
    }
  }

  let locked = false;
  let checkpointed = false;
  const run = async (self: CudaSteps, step: StepName, fn: () => Promise<void>): Promise<void> => {
    const t0 = performance.now();
    try {
      await fn();
    } catch (err) {
      self.failedStep = step;
      throw err;
    }
    steps.push({ step, ms: performance.now() - t0 });
  };
  const self: CudaSteps = {
    active: true,
    async suspend(lockTimeoutMs) {
      await run(self, 'cuda-lock', () => cuda.lock(pid, lockTimeoutMs));
      locked = true;
      await run(self, 'cuda-checkpoint', () => cuda.checkpoint(pid));
      checkpointed = true;
    },
    async resume(target) {
      await run(self, 'cuda-restore', () => cuda.restore(target));
      checkpointed = false;
      await run(self, 'cuda-unlock', () => cuda.unlock(target));
      locked = false;
    },
    async rollback() {
      const errors: string[] = [];
      if (checkpointed) {
        try {
          await cuda.restore(pid);
          checkpointed = false;
        } catch (err) {
          errors.push(`cuda-restore: ${err instanceof Error ? err.message : String(err)}`);
          return errors; // unlock of a checkpointed process fails anyway
        }
      }
      if (locked) {
        try {
          await cuda.unlock(pid);
          locked = false;
        } catch (err) {
          errors.push(`cuda-unlock: ${err instanceof Error ? err.message : String(err)}`);
        }
      }
      return errors;
    },
  };
  return self;
}

function inactive(why: string): CudaSteps {
  return {
    active: false,
    skipped: why,
    async suspend() {},
    async resume() {},
    async rollback() {
      return [];
    },
  };
}
