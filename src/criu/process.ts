// Checkpoint and restore of one process tree with its GPU state, through libcriu: the CLI's path
// (`kybernate process checkpoint|restore`). It is a thin caller of the shared parts: the GPU engine
// (src/gpu) for the CUDA steps of every process of the tree, the snapshot store (src/snapshot) for the
// directory, its manifest and its verification — the same ones the shim's container path uses.
//
// Invariants:
// - A failed checkpoint leaves the tree running with its GPU state back on the GPU and unlocked (the
//   engine's rollback), and the directory without a snapshot; the error names the failed step.
// - The snapshot is the container path's format (kybernate-manifest.json, kind "process"): restore
//   refuses a directory whose manifest is missing, incomplete or does not match its files, and reads
//   every byte against its sha256 before CRIU restores anything.
// - A frozen or stopped process is refused when the CUDA driver is there (the engine's one rule: the
//   driver never returns for such a target).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import * as criu from '../native/criu';
import { KybernateError } from '../errors';
import { findCudaProcesses, resumeGpuProcesses, suspendGpuProcesses, GpuStepError, type CudaApi, type GpuSuspend } from '../gpu/engine';
import { nvidiaDriverVersion } from '../host/facts';
import { LocalDirectoryStore, type Snapshot, type SnapshotStore, type SnapshotWriter } from '../snapshot/store';
import { INCOMPLETE_FILE, type ProcessManifest } from '../snapshot/schema';
import { VERSION } from '../version';
import { diagnoseCriuRestoreFile, type CriuLogDiagnosis } from './log';
import { alive } from '../host/process';

export { alive } from '../host/process';

export { MANIFEST_FILE as MANIFEST } from '../snapshot/schema';

export type StepName =
  | 'check' | 'cuda-lock' | 'cuda-checkpoint' | 'criu-dump' | 'cuda-restore' | 'cuda-unlock' | 'criu-restore' | 'manifest';

export interface Step {
  step: StepName;
  /** The process of a per-process (GPU) step. */
  pid?: number;
  ms: number;
  /** Bytes written (criu-dump: the image files; manifest: all files it lists). */
  bytes?: number;
}

/** CRIU options that dump and restore share (a restore must repeat what the dump was given). */
interface CriuShared {
  tcpEstablished?: boolean;
  shellJob?: boolean;
  extUnixSk?: boolean;
  fileLocks?: boolean;
  manageCgroupsMode?: criu.CgroupMode;
  extMounts?: ReadonlyArray<readonly [string, string]>;
  /** Kills criu after this long; the process is released and keeps running. Default 10 min. */
  criuTimeoutMs?: number;
}

const DEFAULT_CRIU_TIMEOUT_MS = 10 * 60_000;
const CRIU_OPTION_KEYS = ['tcpEstablished', 'shellJob', 'extUnixSk', 'fileLocks', 'manageCgroupsMode'] as const;

function criuShared(o: CriuShared) {
  return {
    tcpEstablished: o.tcpEstablished, shellJob: o.shellJob, extUnixSk: o.extUnixSk, fileLocks: o.fileLocks,
    manageCgroupsMode: o.manageCgroupsMode, extMounts: o.extMounts, timeoutMs: o.criuTimeoutMs ?? DEFAULT_CRIU_TIMEOUT_MS,
  };
}

export interface CheckpointOptions extends CriuShared {
  pid: number;
  imagesDir: string;
  leaveRunning?: boolean;
  /** cuCheckpointProcessLock timeout. Default 10 s. */
  cudaLockTimeoutMs?: number;
  /** Tests: the CUDA module to use (default: src/native/cuda, imported on first use); null: none. */
  cuda?: CudaApi | null;
  /** Default: the local directory store (imagesDir is a path). */
  store?: SnapshotStore;
}

export interface CheckpointResult {
  pid: number;
  imagesDir: string;
  /** Whether the tree had CUDA state (and the GPU steps ran). */
  cuda: boolean;
  /** Why no process of the tree had CUDA state to checkpoint, when none had. */
  cudaSkipped?: string;
  steps: Step[];
  /** Bytes of the image files. */
  bytes: number;
  snapshot: Snapshot;
}

export interface RestoreOptions extends CriuShared {
  imagesDir: string;
  cuda?: CudaApi | null;
  store?: SnapshotStore;
}

export interface RestoreResult {
  pid: number;
  cuda: boolean;
  steps: Step[];
}

/** A failed checkpoint or restore step. `processRunning`: whether the root pid was alive afterwards. */
export class StepError extends KybernateError {
  readonly step: StepName;
  readonly pid?: number;
  readonly processRunning: boolean;
  readonly steps: Step[];
  /** Rollback steps that failed too (the GPU state may then be lost). */
  readonly rollbackErrors: string[];
  /** For a failed criu-restore: the cause read from CRIU's log, when it is a known one. */
  readonly diagnosis?: CriuLogDiagnosis;
  constructor(step: StepName, message: string, info: {
    pid?: number; processRunning: boolean; steps: Step[]; cause?: unknown; rollbackErrors?: string[]; diagnosis?: CriuLogDiagnosis;
  }) {
    const cause = info.cause as { code?: unknown } | undefined;
    const code = KybernateError.is(cause) ? cause.code
      : info.diagnosis?.errorCode ?? (step === 'criu-restore' || step === 'cuda-restore' || step === 'cuda-unlock' ? 'KYB_ERR_RESTORE_FAILED' : 'KYB_ERR_CHECKPOINT_FAILED');
    super(code, message, { cause: info.cause });
    this.name = 'StepError';
    this.step = step;
    if (info.pid !== undefined) this.pid = info.pid;
    this.processRunning = info.processRunning;
    this.steps = info.steps;
    this.rollbackErrors = info.rollbackErrors ?? [];
    if (info.diagnosis !== undefined) this.diagnosis = info.diagnosis;
  }
}


/** The tree's pids, root first: every thread's children, recursively (what CRIU dumps). */
export function treePids(root: number): number[] {
  const out: number[] = [];
  const seen = new Set<number>();
  const visit = (pid: number) => {
    if (seen.has(pid)) return;
    seen.add(pid);
    out.push(pid);
    let tids: string[] = [];
    try {
      tids = fs.readdirSync(`/proc/${pid}/task`);
    } catch {
      return; // exited meanwhile
    }
    for (const tid of tids) {
      let children = '';
      try {
        children = fs.readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8');
      } catch {
        continue;
      }
      for (const c of children.split(/\s+/).filter(Boolean)) visit(Number(c));
    }
  };
  visit(root);
  return out;
}

async function timed<T>(steps: Step[], step: StepName, fn: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  const out = await fn();
  steps.push({ step, ms: performance.now() - t0 });
  return out;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function gpuSteps(err: GpuStepError | { steps: GpuStepError['steps'] }): Step[] {
  return err.steps.map((s) => ({ step: s.step, pid: s.pid, ms: s.ms }));
}

/**
 * `at`: the process of the tree the step failed for, when not the root (a GPU step of a child).
 * `note`: what else the caller must know (appended).
 */
function failed(step: StepName, err: unknown, pid: number, steps: Step[], rollbackErrors: string[],
  extra: { at?: number; note?: string } = {}): StepError {
  const running = alive(pid);
  const where = extra.at !== undefined && extra.at !== pid ? `pid ${extra.at} (of the tree of pid ${pid})` : `pid ${pid}`;
  let msg = `${step} failed for ${where}: ${message(err)}`;
  msg += running ? '; the process keeps running' : '; the process is gone';
  if (rollbackErrors.length > 0) msg += ` (rollback failed: ${rollbackErrors.join('; ')})`;
  if (extra.note) msg += `; ${extra.note}`;
  return new StepError(step, msg, { pid, processRunning: running, steps, cause: err, rollbackErrors });
}

/** Refuses a directory with anything in it: leftovers of another checkpoint would be mixed into this one. */
function checkEmpty(imagesDir: string, pid: number, steps: Step[]): void {
  try {
    fs.mkdirSync(imagesDir, { recursive: true });
    const left = fs.readdirSync(imagesDir);
    if (left.length > 0) throw new Error(`not empty (${left.slice(0, 3).join(', ')}${left.length > 3 ? ', …' : ''}); use a new directory`);
  } catch (err) {
    throw new StepError('check', `images directory ${imagesDir}: ${message(err)}`, { pid, processRunning: true, steps, cause: err });
  }
}

/** The local store's refs are absolute paths; the CLI's --images may be relative (to the working directory). */
function imagesRef(imagesDir: string, store: SnapshotStore | undefined): string {
  return store === undefined ? path.resolve(imagesDir) : imagesDir;
}

export async function checkpointProcess(opts: CheckpointOptions): Promise<CheckpointResult> {
  const { pid } = opts;
  const imagesDir = imagesRef(opts.imagesDir, opts.store);
  const steps: Step[] = [];
  const leaveRunning = opts.leaveRunning ?? false;
  if (!Number.isInteger(pid) || pid <= 0) throw new TypeError('pid must be a positive integer');
  if (!alive(pid)) throw new StepError('check', `no such process: ${pid}`, { pid, processRunning: false, steps });
  checkEmpty(imagesDir, pid, steps);
  const store = opts.store ?? new LocalDirectoryStore();
  let writer: SnapshotWriter;
  try {
    writer = await store.begin(imagesDir, { container: `pid ${pid}`, namespace: '' });
  } catch (err) {
    throw new StepError('check', `images directory ${imagesDir}: ${message(err)}`, { pid, processRunning: true, steps, cause: err });
  }
  // Set once CRIU's dump has ended the tree: from then on the images are all that is left of it.
  const dumped = { treeGone: false };
  try {
    return await checkpointInto(opts, writer, steps, leaveRunning, dumped);
  } catch (err) {
    // A failure after the dump ended the tree keeps the images (marked incomplete, never restored as a
    // snapshot): removing them would lose the process for good.
    if (!dumped.treeGone) await writer.abort();
    throw err;
  }
}

async function checkpointInto(opts: CheckpointOptions, writer: SnapshotWriter, steps: Step[],
  leaveRunning: boolean, dumped: { treeGone: boolean }): Promise<CheckpointResult> {
  const { pid } = opts;
  let found: Awaited<ReturnType<typeof findCudaProcesses>>;
  try {
    found = await findCudaProcesses(treePids(pid), opts.cuda);
  } catch (err) {
    throw failed('check', err, pid, steps, []);
  }
  let gpu: GpuSuspend | undefined;
  if (found.cuda.length > 0) {
    try {
      gpu = await suspendGpuProcesses(found.cuda, { lockTimeoutMs: opts.cudaLockTimeoutMs, api: opts.cuda });
      steps.push(...gpuSteps(gpu));
    } catch (err) {
      if (!(err instanceof GpuStepError)) throw failed('cuda-lock', err, pid, steps, []);
      steps.push(...gpuSteps(err));
      throw failed(err.step, err.cause, pid, steps, err.rollbackErrors, { at: err.pid });
    }
  }

  const tDump = performance.now();
  try {
    await criu.dump({ pid, imagesDir: writer.dir, leaveRunning, ...criuShared(opts) });
  } catch (err) {
    throw failed('criu-dump', err, pid, steps, gpu ? await gpu.rollback() : []);
  }
  const dumpMs = performance.now() - tDump;
  dumped.treeGone = !leaveRunning;
  const kept = dumped.treeGone
    ? `the images CRIU wrote stay in ${writer.dir}, marked ${INCOMPLETE_FILE}: restore refuses them, but they are all that is left of the tree`
    : undefined;
  let dumpBytes: number;
  try {
    dumpBytes = imageBytes(writer.dir);
  } catch (err) {
    throw failed('manifest', err, pid, steps, [], { note: kept });
  }
  steps.push({ step: 'criu-dump', ms: dumpMs, bytes: dumpBytes });

  if (leaveRunning && gpu) {
    try {
      steps.push(...gpuSteps({ steps: await resumeGpuProcesses(gpu.pids, { api: opts.cuda }) }));
    } catch (err) {
      if (err instanceof GpuStepError) steps.push(...gpuSteps(err));
      throw failed(err instanceof GpuStepError ? err.step : 'cuda-restore', err, pid, steps, [],
        err instanceof GpuStepError ? { at: err.pid } : {});
    }
  }

  const tManifest = performance.now();
  let snapshot: Snapshot;
  try {
    const options: Record<string, unknown> = {};
    for (const k of CRIU_OPTION_KEYS) if (opts[k] !== undefined) options[k] = opts[k];
    const driver = found.cuda.length > 0 ? nvidiaDriverVersion() ?? 'unknown' : undefined;
    snapshot = await writer.commit({
      kind: 'process',
      process: { pid, leaveRunning },
      versions: { criu: criu.formatVersion(await criu.version()), kernel: os.release(), shim: VERSION, ...(driver ? { driver } : {}) },
      // Which GPUs a bare process used is not known here: restore checks the driver, not the cards.
      gpus: [],
      cuda: { pids: found.cuda, deviceMemoryBytes: 0 },
      options,
      steps: steps.map((s) => ({ step: s.pid ? `${s.step}:${s.pid}` : s.step, ms: Math.round(s.ms * 1000) / 1000, ...(s.bytes !== undefined ? { bytes: s.bytes } : {}) })),
    }, { durable: !leaveRunning });
  } catch (err) {
    throw failed('manifest', err, pid, steps, [], { note: kept });
  }
  const bytes = snapshot.manifest.files.reduce((n, f) => n + f.size, 0);
  steps.push({ step: 'manifest', ms: performance.now() - tManifest, bytes });

  const out: CheckpointResult = {
    pid, imagesDir: writer.dir, cuda: found.cuda.length > 0, steps, bytes: steps.find((s) => s.step === 'criu-dump')?.bytes ?? bytes, snapshot,
  };
  if (found.cuda.length === 0) out.cudaSkipped = [...new Set(found.skipped.map((s) => s.why))].join('; ') || 'no processes';
  return out;
}

/** Bytes of the image files CRIU wrote (top level; CRIU writes no subdirectories). */
function imageBytes(dir: string): number {
  let n = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (e.isFile() && e.name.endsWith('.img')) n += fs.statSync(`${dir}/${e.name}`).size;
  }
  return n;
}

export async function restoreProcess(opts: RestoreOptions): Promise<RestoreResult> {
  const steps: Step[] = [];
  const here = await criuVersionText();
  let manifest: ProcessManifest;
  let snapshot: Snapshot;
  try {
    const driver = nvidiaDriverVersion();
    snapshot = await (opts.store ?? new LocalDirectoryStore()).open(imagesRef(opts.imagesDir, opts.store), {
      ...(here ? { criuVersion: here } : {}), ...(driver ? { driverVersion: driver } : {}),
    });
    if (snapshot.manifest.kind !== 'process') {
      throw new KybernateError('KYB_ERR_CHECKPOINT_INVALID',
        `checkpoint ${snapshot.dir} is a container's (${snapshot.manifest.container.id}): restore it through containerd`);
    }
    manifest = snapshot.manifest;
    // No CRIU gate here: nothing may start before every byte matched.
    await snapshot.verify();
  } catch (err) {
    throw new StepError('check', message(err), { processRunning: false, steps, cause: err });
  }
  let pid: number;
  try {
    pid = await timed(steps, 'criu-restore', () => criu.restore({ imagesDir: snapshot.dir, ...criuShared({ ...manifestCriuFlags(manifest), ...definedOnly(opts) }) }));
  } catch (err) {
    // CRIU's log says why in its own words; the known causes become one sentence with the fix.
    const logFile = (err as { logFile?: unknown }).logFile;
    const diagnosis = typeof logFile === 'string'
      ? diagnoseCriuRestoreFile(logFile, { dumpCriuVersion: manifest.versions.criu, criuVersion: here })
      : undefined;
    const why = diagnosis === undefined ? message(err) : `${diagnosis.sentence} (CRIU log: ${String(logFile)})`;
    throw new StepError('criu-restore', `criu-restore failed: ${why}`, {
      pid: manifest.process.pid, processRunning: false, steps, cause: err, diagnosis,
    });
  }
  if (manifest.cuda.pids.length > 0) {
    // CRIU restores a tree outside a pid namespace with its original pids.
    try {
      steps.push(...gpuSteps({ steps: await resumeGpuProcesses(manifest.cuda.pids, { api: opts.cuda }) }));
    } catch (err) {
      if (err instanceof GpuStepError) steps.push(...gpuSteps(err));
      const step = err instanceof GpuStepError ? err.step : 'cuda-restore';
      throw new StepError(step,
        `${step} failed for restored pid ${pid}: ${message(err)}; the process runs but its GPU state is not restored ` +
          '(CUDA calls in it block or fail)',
        { pid, processRunning: alive(pid), steps, cause: err });
    }
  }
  return { pid, cuda: manifest.cuda.pids.length > 0, steps };
}

/** The CRIU flags the dump recorded; a restore must repeat them (the caller's own flags win). */
function manifestCriuFlags(m: ProcessManifest): CriuShared {
  const out: Record<string, unknown> = {};
  for (const k of CRIU_OPTION_KEYS) if (m.options[k] !== undefined) out[k] = m.options[k];
  return out as CriuShared;
}

/** `o` without its undefined values: a flag the caller left unset must not unset the manifest's. */
function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** This machine's CRIU version as "4.2.1", or undefined when it cannot be asked. */
async function criuVersionText(): Promise<string | undefined> {
  try {
    return criu.formatVersion(await criu.version());
  } catch {
    return undefined;
  }
}
