// The CUDA driver as the GPU engine uses it: the part of src/native/cuda it calls, loaded on first use,
// so that a build without the addon (or a machine without libcuda) still checkpoints processes that
// have no GPU state.
import * as fs from 'node:fs';

/** The part of src/native/cuda the engine uses. getState is used only to undo a failed step precisely. */
export interface CudaApi {
  getRestoreThreadId(pid: number): Promise<number>;
  lock(pid: number, timeoutMs: number): Promise<void>;
  checkpoint(pid: number): Promise<void>;
  restore(pid: number): Promise<void>;
  unlock(pid: number): Promise<void>;
  getState?(pid: number): Promise<string>;
}

/** src/native/cuda, or why it cannot be used. */
export async function loadCuda(): Promise<CudaApi | string> {
  try {
    return (await import('../native/cuda')) as unknown as CudaApi;
  } catch (err) {
    return `CUDA support not built (${err instanceof Error ? err.message : String(err)})`;
  }
}

/**
 * Whether any of pids has the CUDA driver mapped. Cheap (no driver call): it decides whether a paused
 * container must be thawed at all before the engine may ask the driver about its processes.
 */
export function mapsCudaDriver(pids: readonly number[]): boolean {
  return pids.some((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/maps`, 'utf8').includes('libcuda.so');
    } catch {
      return false;
    }
  });
}
