// Checkpoint and restore of one process tree, with its GPU state: CUDA lock + checkpoint → CRIU dump,
// and CRIU restore → CUDA restore + unlock. A process without CUDA state (or a machine without the
// driver) takes the CRIU steps only.
//
// Invariants:
// - A failed checkpoint leaves the process running with its GPU state back on the GPU and unlocked
//   (rollback of the CUDA steps already done); the error names the failed step.
// - manifest.json is written last, after every image file is complete; restore refuses a directory
//   without it, or whose files differ from it ("half-written images").
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import * as criu from '../native/criu';
import { diagnoseCriuRestoreFile, type CriuLogDiagnosis } from './log';
import { cudaSteps, type CudaApi } from '../gpu/driver';

export const MANIFEST = 'manifest.json';
const MANIFEST_VERSION = 1;

export type StepName =
  | 'check' | 'cuda-lock' | 'cuda-checkpoint' | 'criu-dump' | 'cuda-restore' | 'cuda-unlock' | 'criu-restore'
  | 'manifest';

export interface Step {
  step: StepName;
  ms: number;
  /** Bytes written (criu-dump: the image files; manifest: its own size). */
  bytes?: number;
}

export interface Manifest {
  version: number;
  pid: number;
  time: string;
  criuVersion: string;
  cuda: boolean;
  leaveRunning: boolean;
  steps: Step[];
  files: Array<{ name: string; bytes: number }>;
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
  /** Tests: the CUDA module to use (default: src/native/cuda, imported on first use). */
  cuda?: CudaApi | null;
}

export interface CheckpointResult {
  pid: number;
  imagesDir: string;
  /** Whether the process had CUDA state (and the CUDA steps ran). */
  cuda: boolean;
  /** Why the CUDA steps were skipped, when they were. */
  cudaSkipped?: string;
  steps: Step[];
  bytes: number;
  manifest: Manifest;
}

export interface RestoreOptions extends CriuShared {
  imagesDir: string;
  cuda?: CudaApi | null;
}

export interface RestoreResult {
  pid: number;
  cuda: boolean;
  steps: Step[];
}

/** A failed checkpoint or restore step. `processRunning`: whether the pid was alive afterwards. */
export class StepError extends Error {
  readonly step: StepName;
  readonly pid?: number;
  readonly processRunning: boolean;
  readonly steps: Step[];
  readonly cause: unknown;
  /** Rollback steps that failed too (the GPU state may then be lost). */
  readonly rollbackErrors: string[];
  /** For a failed criu-restore: the cause read from CRIU's log, when it is a known one. */
  readonly diagnosis?: CriuLogDiagnosis;
  constructor(step: StepName, message: string, info: {
    pid?: number; processRunning: boolean; steps: Step[]; cause?: unknown; rollbackErrors?: string[]; diagnosis?: CriuLogDiagnosis;
  }) {
    super(message);
    this.name = 'StepError';
    this.step = step;
    if (info.pid !== undefined) this.pid = info.pid;
    this.processRunning = info.processRunning;
    this.steps = info.steps;
    this.cause = info.cause;
    this.rollbackErrors = info.rollbackErrors ?? [];
    if (info.diagnosis !== undefined) this.diagnosis = info.diagnosis;
  }
}

const DEFAULT_CRIU_TIMEOUT_MS = 10 * 60_000;
const DEFAULT_LOCK_TIMEOUT_MS = 10_000;

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A zombie has exited; only its parent's wait is missing.
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
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

/** The image files (not logs, not the manifest) with their sizes, sorted by name. */
function imageFiles(dir: string): Array<{ name: string; bytes: number }> {
  const out: Array<{ name: string; bytes: number }> = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (!e.isFile() || e.name === MANIFEST || e.name.endsWith('.log') || e.name.startsWith('.')) continue;
    out.push({ name: e.name, bytes: fs.statSync(path.join(dir, e.name)).size });
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

export async function checkpointProcess(opts: CheckpointOptions): Promise<CheckpointResult> {
  const { pid, imagesDir } = opts;
  const steps: Step[] = [];
  const leaveRunning = opts.leaveRunning ?? false;
  if (!Number.isInteger(pid) || pid <= 0) throw new TypeError('pid must be a positive integer');
  if (!alive(pid)) {
    throw new StepError('check', `no such process: ${pid}`, { pid, processRunning: false, steps });
  }
  try {
    fs.mkdirSync(imagesDir, { recursive: true });
    // Leftover images of an earlier checkpoint would be mixed into this one (and into its manifest).
    const left = fs.readdirSync(imagesDir);
    if (left.length > 0) throw new Error(`not empty (${left.slice(0, 3).join(', ')}${left.length > 3 ? ', …' : ''}); use a new directory`);
  } catch (err) {
    throw new StepError('check', `images directory ${imagesDir}: ${message(err)}`, {
      pid, processRunning: true, steps, cause: err,
    });
  }

  const gpu = await cudaSteps(pid, opts.cuda, steps);
  try {
    await gpu.suspend(opts.cudaLockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS);
  } catch (err) {
    const rollbackErrors = await gpu.rollback();
    throw failed(gpu.failedStep ?? 'cuda-lock', err, pid, steps, rollbackErrors);
  }

  try {
    await timed(steps, 'criu-dump', () =>
      criu.dump({ pid, imagesDir, leaveRunning, ...criuShared(opts) }),
    );
  } catch (err) {
    const rollbackErrors = await gpu.rollback();
    throw failed('criu-dump', err, pid, steps, rollbackErrors);
  }
  const files = imageFiles(imagesDir);
  const bytes = files.reduce((n, f) => n + f.bytes, 0);
  steps[steps.length - 1].bytes = bytes;

  if (leaveRunning) {
    try {
      await gpu.resume(pid);
    } catch (err) {
      throw failed(gpu.failedStep ?? 'cuda-restore', err, pid, steps, []);
    }
  }

  const t0 = performance.now();
  const manifest: Manifest = {
    version: MANIFEST_VERSION,
    pid,
    time: new Date().toISOString(),
    criuVersion: criu.formatVersion(await criu.version()),
    cuda: gpu.active,
    leaveRunning,
    steps,
    files,
  };
  const text = `${JSON.stringify(manifest, null, 2)}\n`;
  const tmp = path.join(imagesDir, `.${MANIFEST}.tmp`);
  fs.writeFileSync(tmp, text);
  const fd = fs.openSync(tmp, 'r');
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  fs.renameSync(tmp, path.join(imagesDir, MANIFEST));
  steps.push({ step: 'manifest', ms: performance.now() - t0, bytes: Buffer.byteLength(text) });

  const out: CheckpointResult = { pid, imagesDir, cuda: gpu.active, steps, bytes, manifest };
  if (gpu.skipped !== undefined) out.cudaSkipped = gpu.skipped;
  return out;
}

function failed(step: StepName, err: unknown, pid: number, steps: Step[], rollbackErrors: string[]): StepError {
  const running = alive(pid);
  let msg = `${step} failed for pid ${pid}: ${message(err)}`;
  msg += running ? '; the process keeps running' : '; the process is gone';
  if (rollbackErrors.length > 0) msg += ` (rollback failed: ${rollbackErrors.join('; ')})`;
  return new StepError(step, msg, { pid, processRunning: running, steps, cause: err, rollbackErrors });
}

/** Reads and verifies manifest.json against the files; throws "half-written images" otherwise. */
export function readManifest(imagesDir: string): Manifest {
  const file = path.join(imagesDir, MANIFEST);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      const why = fs.existsSync(imagesDir) ? 'the checkpoint did not finish' : 'the directory does not exist';
      throw new Error(`half-written images in ${imagesDir}: no ${MANIFEST} (${why}); refusing to restore`);
    }
    throw new Error(`cannot read ${file}: ${message(err)}`);
  }
  let m: Manifest;
  try {
    m = JSON.parse(text) as Manifest;
  } catch {
    throw new Error(`half-written images in ${imagesDir}: ${MANIFEST} is not valid JSON; refusing to restore`);
  }
  if (m.version !== MANIFEST_VERSION || !Array.isArray(m.files)) {
    throw new Error(`${file}: unsupported manifest (version ${String(m.version)})`);
  }
  for (const f of m.files) {
    let size: number;
    try {
      size = fs.statSync(path.join(imagesDir, f.name)).size;
    } catch {
      throw new Error(`half-written images in ${imagesDir}: ${f.name} is missing; refusing to restore`);
    }
    if (size !== f.bytes) {
      throw new Error(
        `half-written images in ${imagesDir}: ${f.name} is ${size} bytes, the manifest says ${f.bytes}; refusing to restore`,
      );
    }
  }
  return m;
}

export async function restoreProcess(opts: RestoreOptions): Promise<RestoreResult> {
  const steps: Step[] = [];
  let manifest: Manifest;
  try {
    manifest = readManifest(opts.imagesDir);
  } catch (err) {
    throw new StepError('check', message(err), { processRunning: false, steps, cause: err });
  }
  let pid: number;
  try {
    pid = await timed(steps, 'criu-restore', () =>
      criu.restore({ imagesDir: opts.imagesDir, ...criuShared(opts) }),
    );
  } catch (err) {
    // CRIU's log says why in its own words; the known causes become one sentence with the fix.
    const logFile = (err as { logFile?: unknown }).logFile;
    const diagnosis = typeof logFile === 'string'
      ? diagnoseCriuRestoreFile(logFile, { dumpCriuVersion: manifest.criuVersion, criuVersion: await criuVersionText() })
      : undefined;
    const why = diagnosis === undefined ? message(err) : `${diagnosis.sentence} (CRIU log: ${String(logFile)})`;
    throw new StepError('criu-restore', `criu-restore failed: ${why}`, {
      pid: manifest.pid, processRunning: false, steps, cause: err, diagnosis,
    });
  }
  if (manifest.cuda) {
    const gpu = await cudaSteps(pid, opts.cuda, steps, true);
    try {
      await gpu.resume(pid);
    } catch (err) {
      throw new StepError(
        gpu.failedStep ?? 'cuda-restore',
        `${gpu.failedStep ?? 'cuda-restore'} failed for restored pid ${pid}: ${message(err)}; the process runs ` +
          'but its GPU state is not restored (CUDA calls in it block or fail)',
        { pid, processRunning: alive(pid), steps, cause: err },
      );
    }
  }
  return { pid, cuda: manifest.cuda, steps };
}

/** This machine's CRIU version as "4.2.1", or undefined when it cannot be asked. */
async function criuVersionText(): Promise<string | undefined> {
  try {
    return criu.formatVersion(await criu.version());
  } catch {
    return undefined;
  }
}
