// The CUDA driver's process-checkpoint API (cuCheckpointProcess*), through the addon (native/cuda.cc).
// libcuda.so.1 is loaded on first use (KYBERNATE_LIBCUDA overrides the file), so everything here
// works on machines without CUDA until a call is made; such calls reject with code
// KYB_ERR_CUDA_NO_DRIVER or KYB_ERR_CUDA_DRIVER_TOO_OLD.
//
// Threads: every call runs on its own native threads, not on the libuv pool, because a driver call on a
// process that cannot run (frozen cgroup, SIGSTOP) never returns. Such a call rejects with
// KYB_ERR_CUDA_HUNG once its watchdog expires, and its thread stays blocked in the driver. The addon
// refuses frozen or stopped targets up front (KYB_ERR_CUDA_FROZEN), so the watchdog is the last resort
// for a process frozen between that check and the call. At most MAX_CONCURRENT calls run at once; more
// wait in FIFO order (the driver serialises per process anyway, and each call holds two threads).
import { performance } from 'node:perf_hooks';
import { NativeError } from './errors';
import { nativeBinding } from './binding';
import { Semaphore } from './semaphore';

export type CudaProcessState = 'running' | 'locked' | 'checkpointed' | 'failed';

export interface GpuInfo {
  index: number;
  /** "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", as nvidia-smi prints it. */
  uuid: string;
  name: string;
  memoryBytes: number;
}

/** Restore onto another GPU of the same type: [UUID at checkpoint, UUID to restore onto]. */
export type GpuPair = readonly [oldUuid: string, newUuid: string];

export interface CallOptions {
  /** Rejects with KYB_ERR_CUDA_HUNG when the driver has not returned by then. */
  watchdogMs?: number;
}

/** A failed CUDA call. `cudaError` is the driver's name (CUDA_ERROR_ILLEGAL_STATE, …) when it failed. */
export class CudaError extends NativeError {
  readonly cudaError?: string;
  /** The numeric CUresult. */
  readonly cudaResult?: number;
  constructor(base: NativeError, cudaError?: string, cudaResult?: number) {
    super(base.message, base);
    this.name = 'CudaError';
    if (cudaError !== undefined) this.cudaError = cudaError;
    if (cudaResult !== undefined) this.cudaResult = cudaResult;
    if (base.stack !== undefined) this.stack = base.stack.replace(/^NativeError/, 'CudaError');
  }
}

/** What every native call resolves to: nativeMs = time on its call thread (frozen check + driver call). */
interface Timed<T> {
  value: T;
  nativeMs: number;
}

/** The addon's CUDA exports (native/cuda.h). */
interface CudaBinding {
  cudaDriverVersion(watchdogMs: number): Promise<Timed<number>>;
  cudaListGpus(watchdogMs: number): Promise<Timed<GpuInfo[]>>;
  cudaGetState(pid: number, watchdogMs: number): Promise<Timed<number>>;
  cudaGetRestoreThreadId(pid: number, watchdogMs: number): Promise<Timed<number>>;
  cudaLock(pid: number, timeoutMs: number, watchdogMs: number): Promise<Timed<void>>;
  cudaCheckpoint(pid: number, watchdogMs: number): Promise<Timed<void>>;
  cudaRestore(pid: number, pairs: GpuPair[], watchdogMs: number): Promise<Timed<void>>;
  cudaUnlock(pid: number, watchdogMs: number): Promise<Timed<void>>;
  cudaCheckRunnable(pid: number): void;
}

const b = (): CudaBinding => nativeBinding() as CudaBinding;

export const MAX_CONCURRENT = 8;
/** Default watchdogs: quick queries; checkpoint/restore move up to a GPU's memory at ~3 GB/s. */
export const QUERY_WATCHDOG_MS = 60_000;
export const TRANSFER_WATCHDOG_MS = 15 * 60_000;
/** Observed (ENVIRONMENT.md): a lock can outlast its own timeout; the watchdog adds this much. */
export const LOCK_GRACE_MS = 60_000;

const slots = new Semaphore(MAX_CONCURRENT);
const slot = <T>(fn: () => Promise<T>): Promise<T> => slots.run(fn);

function convert(err: unknown, site: Error): unknown {
  const out = NativeError.from(err, site);
  if (!(out instanceof NativeError)) return out;
  const tagged = err as { cudaError?: unknown; cudaResult?: unknown };
  return new CudaError(
    out,
    typeof tagged.cudaError === 'string' ? tagged.cudaError : undefined,
    typeof tagged.cudaResult === 'number' ? tagged.cudaResult : undefined,
  );
}

/** One native call: concurrency-limited, with the caller's stack on failure. */
async function timed<T>(site: Error, fn: (n: CudaBinding) => Promise<Timed<T>>): Promise<Timed<T>> {
  try {
    return await slot(() => fn(b()));
  } catch (err) {
    throw convert(err, site);
  }
}

async function call<T>(site: Error, fn: (n: CudaBinding) => Promise<Timed<T>>): Promise<T> {
  return (await timed(site, fn)).value;
}

const STATES: readonly CudaProcessState[] = ['running', 'locked', 'checkpointed', 'failed'];

/** The driver API version, e.g. 13000 for CUDA 13.0 (driver r580). */
export function cudaDriverVersion(opts: CallOptions = {}): Promise<number> {
  return call(new Error(), (n) => n.cudaDriverVersion(opts.watchdogMs ?? QUERY_WATCHDOG_MS));
}

/** GPUs the driver sees (calls cuInit once per process). */
export function listGpus(opts: CallOptions = {}): Promise<GpuInfo[]> {
  return call(new Error(), (n) => n.cudaListGpus(opts.watchdogMs ?? QUERY_WATCHDOG_MS));
}

/** The CUDA checkpoint state of a process. Non-CUDA processes reject (driver-specific error name). */
export async function getState(pid: number, opts: CallOptions = {}): Promise<CudaProcessState> {
  const s = await call(new Error(), (n) => n.cudaGetState(pid, opts.watchdogMs ?? QUERY_WATCHDOG_MS));
  const name = STATES[s];
  if (name === undefined) throw new CudaError(new NativeError(`getState pid ${pid}: unknown state ${s}`, { code: 'KYB_ERR_CUDA', errno: 0, op: 'getState', pid }));
  return name;
}

/** The thread inside the process that does the driver's checkpoint work (it must be able to run). */
export function getRestoreThreadId(pid: number, opts: CallOptions = {}): Promise<number> {
  return call(new Error(), (n) => n.cudaGetRestoreThreadId(pid, opts.watchdogMs ?? QUERY_WATCHDOG_MS));
}

/** RUNNING → LOCKED: blocks the process's further CUDA calls and waits for submitted work (0 = no timeout). */
export function lock(pid: number, timeoutMs: number, opts: CallOptions = {}): Promise<void> {
  return call(new Error(), (n) => n.cudaLock(pid, timeoutMs, opts.watchdogMs ?? timeoutMs + LOCK_GRACE_MS));
}

/** LOCKED → CHECKPOINTED: device memory moves into the process's host memory; GPU resources are released. */
export function checkpoint(pid: number, opts: CallOptions = {}): Promise<void> {
  return call(new Error(), (n) => n.cudaCheckpoint(pid, opts.watchdogMs ?? TRANSFER_WATCHDOG_MS));
}

/** CHECKPOINTED → LOCKED, optionally onto other GPUs of the same type (pairs must cover every GPU). */
export function restore(pid: number, gpuPairs: readonly GpuPair[] = [], opts: CallOptions = {}): Promise<void> {
  return call(new Error(), (n) => n.cudaRestore(pid, [...gpuPairs], opts.watchdogMs ?? TRANSFER_WATCHDOG_MS));
}

/** LOCKED → RUNNING. */
export function unlock(pid: number, opts: CallOptions = {}): Promise<void> {
  return call(new Error(), (n) => n.cudaUnlock(pid, opts.watchdogMs ?? QUERY_WATCHDOG_MS));
}

/** Throws KYB_ERR_CUDA_FROZEN (frozen cgroup or stopped process) or ESRCH; what every call checks first. */
export function checkRunnable(pid: number): void {
  const site = new Error();
  try {
    b().cudaCheckRunnable(pid);
  } catch (err) {
    throw convert(err, site);
  }
}

/** Wall time of each step as the caller sees it, and (…NativeMs) the part spent on the call thread. */
export interface SuspendTimings {
  lockMs: number;
  checkpointMs: number;
  totalMs: number;
  lockNativeMs: number;
  checkpointNativeMs: number;
}

export interface ResumeTimings {
  restoreMs: number;
  unlockMs: number;
  totalMs: number;
  restoreNativeMs: number;
  unlockNativeMs: number;
}

/**
 * lock + checkpoint. If the checkpoint fails, the process is unlocked again when the driver left it
 * LOCKED, so a failed suspend leaves it running; the checkpoint's error is what rejects.
 * Freeze the process (if wanted) only after this resolves.
 */
export async function suspend(pid: number, opts: { lockTimeoutMs?: number } & CallOptions = {}): Promise<SuspendTimings> {
  const lockTimeoutMs = opts.lockTimeoutMs ?? 10_000;
  const t0 = performance.now();
  const l = await timed(new Error(), (n) => n.cudaLock(pid, lockTimeoutMs, opts.watchdogMs ?? lockTimeoutMs + LOCK_GRACE_MS));
  const t1 = performance.now();
  let c: Timed<void>;
  try {
    c = await timed(new Error(), (n) => n.cudaCheckpoint(pid, opts.watchdogMs ?? TRANSFER_WATCHDOG_MS));
  } catch (err) {
    if ((await getState(pid).catch(() => undefined)) === 'locked') await unlock(pid).catch(() => undefined);
    throw err;
  }
  const t2 = performance.now();
  return { lockMs: t1 - t0, checkpointMs: t2 - t1, totalMs: t2 - t0, lockNativeMs: l.nativeMs, checkpointNativeMs: c.nativeMs };
}

/** restore + unlock; thaw a frozen process before calling this. */
export async function resume(pid: number, opts: { gpuPairs?: readonly GpuPair[] } & CallOptions = {}): Promise<ResumeTimings> {
  const t0 = performance.now();
  const r = await timed(new Error(), (n) => n.cudaRestore(pid, [...(opts.gpuPairs ?? [])], opts.watchdogMs ?? TRANSFER_WATCHDOG_MS));
  const t1 = performance.now();
  const u = await timed(new Error(), (n) => n.cudaUnlock(pid, opts.watchdogMs ?? QUERY_WATCHDOG_MS));
  const t2 = performance.now();
  return { restoreMs: t1 - t0, unlockMs: t2 - t1, totalMs: t2 - t0, restoreNativeMs: r.nativeMs, unlockNativeMs: u.nativeMs };
}
