// Task.Checkpoint of one container: GPU state into host memory, `runc checkpoint` (CRIU) into the
// request's directory, the snapshot manifest last. Restore's half (verification before anything starts,
// the GPU steps after `runc restore`) is in restore.ts.
//
// Invariants:
// - The CUDA driver is never called on a frozen process (it hangs there): a paused container is thawed
//   for the CUDA steps and frozen again before the dump, so that callers that paused it (ctr, CRI) find
//   it paused as they left it.
// - Any failure leaves the container running (or paused, as it was) with its GPU state on the GPU; the
//   error names the step that failed.
// - kybernate-manifest.json is written only after every image file is complete.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { KybernateError } from '../errors';
import { findCudaProcesses, resumeGpuProcesses, suspendGpuProcesses, type GpuStep } from '../checkpoint/gpu';
import { MANIFEST_FILE, specDigest, writeManifest, type SnapshotManifest } from '../checkpoint/manifest';
import type { Container } from './container';
import { manifestOptions, type ParsedCheckpointOptions } from './checkpoint-options';
import { keepCriStatsDump } from './cri-files';
import { gpuMemoryOf, gpusOfSpec, nodeFacts, nsPidOf, warmCuda } from './node-facts';

const CUDA_LOCK_TIMEOUT_MS = 10_000;

export interface CheckpointSummary {
  manifest: SnapshotManifest;
  steps: Array<{ step: string; ms: number; pid?: number }>;
}

/** The `Error` lines of a CRIU log: what runc's own message ("criu failed: type NOTIFY") leaves out. */
function criuErrors(logFile: string): string {
  let text = '';
  try {
    text = fs.readFileSync(logFile, 'utf8');
  } catch {
    return '';
  }
  return text.split('\n').filter((l) => /Error|error \(/.test(l)).slice(-5).map((l) => l.trim()).join('; ');
}

/** Whether any of pids has the CUDA driver mapped: decides if a paused container must be thawed at all. */
function mapsCuda(pids: number[]): boolean {
  return pids.some((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/maps`, 'utf8').includes('libcuda.so');
    } catch {
      return false;
    }
  });
}

/** Runs `work` with the container thawed if it was paused, freezing it again afterwards. */
async function thawed<T>(c: Container, paused: boolean, work: () => Promise<T>): Promise<T> {
  if (!paused) return work();
  await c.runc.resume(c.id);
  try {
    return await work();
  } finally {
    await c.runc.pause(c.id);
  }
}

function stepError(c: Container, step: string, err: unknown, extra = ''): KybernateError {
  const msg = err instanceof Error ? err.message : String(err);
  return new KybernateError('KYB_ERR_CHECKPOINT_FAILED', `checkpoint of ${c.id} failed at ${step}: ${msg}${extra}`, { cause: err });
}

/**
 * Checkpoints `c` into `dir`. Runs inside the init process's operation queue (Process.checkpoint), so no
 * pause/resume/kill of the container interleaves with it.
 */
export async function checkpointContainer(c: Container, dir: string, opts: ParsedCheckpointOptions): Promise<CheckpointSummary> {
  const steps: CheckpointSummary['steps'] = [];
  const t0 = performance.now();
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.rmSync(path.join(dir, MANIFEST_FILE), { force: true });
  const paused = c.init.status === 'paused';
  const pids = await c.pids();

  // GPU: a container suspended in place already has its CUDA state in host memory.
  let cudaPids: number[] = c.gpuSuspension?.pids ?? [];
  let suspendedHere = false;
  let gpuSteps: GpuStep[] = [];
  let deviceMemoryBytes = c.gpuSuspension?.deviceMemoryBytes ?? 0;
  if (!c.gpuSuspension && mapsCuda(pids)) {
    warmCuda();
    try {
      await thawed(c, paused, async () => {
        const found = await findCudaProcesses(pids);
        cudaPids = found.cuda;
        if (cudaPids.length === 0) return;
        // Device memory in use, read while it is still on the GPU.
        deviceMemoryBytes = await gpuMemoryOf(cudaPids);
        const s = await suspendGpuProcesses(cudaPids, { lockTimeoutMs: CUDA_LOCK_TIMEOUT_MS });
        gpuSteps = s.steps;
        suspendedHere = true;
      });
    } catch (err) {
      throw KybernateError.is(err) && err.code === 'KYB_ERR_CHECKPOINT_FAILED' ? err : stepError(c, 'cuda-checkpoint', err);
    }
  }
  steps.push(...gpuSteps);
  const nsPids = cudaPids.map((pid) => nsPidOf(pid));
  const facts = await nodeFacts(c.runc.config.binary, cudaPids.length > 0);

  const resumeGpu = async () => {
    if (!suspendedHere) return;
    await thawed(c, paused, async () => { await resumeGpuProcesses(cudaPids, {}); });
  };

  const workPath = opts.workPath ?? path.join(c.bundle, 'criu-work');
  fs.rmSync(workPath, { recursive: true, force: true });
  fs.mkdirSync(workPath, { recursive: true, mode: 0o700 });
  const tDump = performance.now();
  try {
    await c.runc.checkpoint(c.id, {
      imagePath: dir, workPath, leaveRunning: !opts.exit, parentPath: opts.parentPath, emptyNamespaces: opts.emptyNamespaces,
      tcpEstablished: opts.tcpEstablished, extUnixSk: opts.extUnixSk, shellJob: opts.shellJob, fileLocks: opts.fileLocks,
      manageCgroupsMode: opts.manageCgroupsMode,
    });
  } catch (err) {
    const log = path.join(workPath, 'dump.log');
    const kept = path.join(c.bundle, 'criu-dump.log');
    try { fs.copyFileSync(log, kept); } catch { /* criu may have failed before it logged */ }
    const detail = criuErrors(log);
    const rollback = await resumeGpu().then(() => '', (e: unknown) => `; GPU rollback failed too: ${(e as Error).message}`);
    throw stepError(c, 'criu-dump', err, `${detail ? ` (criu: ${detail})` : ''}; log: ${kept}${rollback}`);
  }
  steps.push({ step: 'criu-dump', ms: performance.now() - tDump });
  const spec = JSON.parse(fs.readFileSync(path.join(c.bundle, 'config.json'), 'utf8')) as Record<string, unknown>;
  if (!opts.workPath) {
    keepCriStatsDump(spec, c.id, workPath);
    fs.rmSync(workPath, { recursive: true, force: true });
  }

  // A container left running gets its GPU state back; one that exited has none to get back.
  if (!opts.exit && suspendedHere) {
    const tResume = performance.now();
    try {
      await resumeGpu();
    } catch (err) {
      throw stepError(c, 'cuda-restore', err, ' (the images were written; the workload\'s GPU state could not be restored)');
    }
    steps.push({ step: 'cuda-resume', ms: performance.now() - tResume });
  }

  const annotations = (spec.annotations ?? {}) as Record<string, string>;
  const tManifest = performance.now();
  steps.push({ step: 'total-before-manifest', ms: tManifest - t0 });
  const manifest = await writeManifest(dir, {
    container: { id: c.id, namespace: c.namespace, image: annotations['io.kubernetes.cri.image-name'] ?? annotations['kybernate.io/image'], bundle: c.bundle },
    spec: { digest: specDigest(c.bundle) },
    versions: { criu: facts.criu ?? 'unknown', runc: facts.runc ?? 'unknown', kernel: facts.kernel, shim: facts.shim, ...(facts.driver ? { driver: facts.driver } : {}) },
    gpus: cudaPids.length > 0 ? gpusOfSpec(spec, facts.gpus) : [],
    // nsPids: the pids CRIU restores them as, to find them again after a restore.
    cuda: { pids: cudaPids, nsPids, deviceMemoryBytes },
    options: { ...manifestOptions(opts), suspendedInPlace: !!c.gpuSuspension },
    steps: steps.map((s) => ({ step: s.pid ? `${s.step}:${s.pid}` : s.step, ms: Math.round(s.ms * 1000) / 1000 })),
  });
  steps.push({ step: 'manifest', ms: performance.now() - tManifest });
  return { manifest, steps };
}
