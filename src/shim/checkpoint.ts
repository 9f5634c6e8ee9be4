// Task.Checkpoint of one container: GPU state into host memory, `runc checkpoint` (CRIU) into a
// snapshot writer of the store (the request's directory), the snapshot manifest last. Restore's half
// (verification before anything starts, the GPU steps after `runc restore`) is process/restore.ts.
//
// Invariants:
// - The CUDA driver is never called on a frozen process (it hangs there): a paused container is thawed
//   for the CUDA steps and frozen again before the dump, so that callers that paused it (ctr, CRI) find
//   it paused as they left it.
// - Any failure leaves the container running (or paused, as it was) with its GPU state on the GPU, and
//   the directory without a partial snapshot (src/snapshot/attempt.ts, through the store); the error names the step
//   that failed.
// - kybernate-manifest.json is written only after every image file is complete (--exit: and synced to disk).
// - --exit: the processes die only once the snapshot is complete and durable, and run no instruction
//   after their dump. The CRIU gate (criu-gate.ts) holds CRIU at post-dump while the manifest is
//   written; a failed manifest makes CRIU resume them instead of killing them. A container without a
//   gate is frozen, dumped with --leave-running, and killed while still frozen once the manifest is
//   durable (this loses established TCP connections, which CRIU's own kill keeps).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { KybernateError } from '../errors';
import { findCudaProcesses, resumeGpuProcesses, suspendGpuProcesses, type GpuStep } from '../gpu/engine';
import { mapsCudaDriver } from '../gpu/driver';
import { specDigest, type SnapshotManifest } from '../snapshot/manifest';
import type { Snapshot, SnapshotStore, SnapshotWriter } from '../snapshot/store';
import type { Container } from './container';
import { manifestOptions, type ParsedCheckpointOptions } from './checkpoint-options';
import { keepCriStatsDump } from './cri-files';
import { CriuGate } from './criu-gate';
import { gpuMemoryOf, gpusOfSpec, nodeFacts, nsPidOf, warmCuda } from '../host/facts';

const CUDA_LOCK_TIMEOUT_MS = 10_000;

export interface CheckpointSummary {
  snapshot: Snapshot;
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

/** How long an --exit checkpoint waits for the killed init's exit to be reaped before it returns. */
const EXIT_WAIT_MS = 10_000;

interface GpuState {
  cudaPids: number[];
  deviceMemoryBytes: number;
  /** Whether this checkpoint locked and checkpointed them (and so must give the state back on failure). */
  suspendedHere: boolean;
  steps: GpuStep[];
}

/** CUDA lock + checkpoint of the container's CUDA processes; a container suspended in place has done it. */
async function suspendGpu(c: Container, paused: boolean, pids: number[]): Promise<GpuState> {
  const out: GpuState = {
    cudaPids: c.gpuSuspension?.pids ?? [], deviceMemoryBytes: c.gpuSuspension?.deviceMemoryBytes ?? 0, suspendedHere: false, steps: [],
  };
  if (c.gpuSuspension || !mapsCudaDriver(pids)) return out;
  warmCuda();
  try {
    await thawed(c, paused, async () => {
      const found = await findCudaProcesses(pids);
      out.cudaPids = found.cuda;
      if (out.cudaPids.length === 0) return;
      // Device memory in use, read while it is still on the GPU: alongside the lock, before the checkpoint.
      const memory = gpuMemoryOf(out.cudaPids).catch(() => 0);
      const s = await suspendGpuProcesses(out.cudaPids, { lockTimeoutMs: CUDA_LOCK_TIMEOUT_MS, whileLocked: memory });
      out.deviceMemoryBytes = await memory;
      out.steps = s.steps;
      out.suspendedHere = true;
    });
  } catch (err) {
    throw KybernateError.is(err) && err.code === 'KYB_ERR_CHECKPOINT_FAILED' ? err : stepError(c, 'cuda-checkpoint', err);
  }
  return out;
}

/**
 * Checkpoints `c` into a new snapshot at `ref`. Runs in the container's one operation queue
 * (Process.checkpoint), so no pause, resume, suspend or update of the container interleaves with it;
 * a Kill may, and then the checkpoint fails.
 */
export async function checkpointContainer(c: Container, ref: string, opts: ParsedCheckpointOptions, store: SnapshotStore): Promise<CheckpointSummary> {
  const writer = await store.begin(ref, { container: c.id, namespace: c.namespace });
  try {
    return await checkpointInto(c, opts, writer);
  } catch (err) {
    // Once committed the snapshot is complete: abort() keeps it whatever failed after that.
    const left = await writer.abort();
    if (!left) throw err;
    const e = KybernateError.is(err) ? err : stepError(c, 'checkpoint', err);
    throw new KybernateError(e.code, `${e.message}; ${left}`, { cause: err });
  }
}

async function checkpointInto(c: Container, opts: ParsedCheckpointOptions, writer: SnapshotWriter): Promise<CheckpointSummary> {
  const dir = writer.dir;
  const steps: CheckpointSummary['steps'] = [];
  const t0 = performance.now();
  const paused = c.init.status === 'paused';
  const pids = await c.pids();
  const gpu = await suspendGpu(c, paused, pids);
  steps.push(...gpu.steps);
  const nsPids = gpu.cudaPids.map((pid) => nsPidOf(pid));
  const facts = await nodeFacts(c.runc.config.binary, gpu.cudaPids.length > 0);
  const spec = JSON.parse(fs.readFileSync(path.join(c.bundle, 'config.json'), 'utf8')) as Record<string, unknown>;
  const annotations = (spec.annotations ?? {}) as Record<string, string>;

  const commitManifest = async (): Promise<Snapshot> => {
    const tManifest = performance.now();
    steps.push({ step: 'total-before-manifest', ms: tManifest - t0 });
    const snapshot = await writer.commit({
      container: { id: c.id, namespace: c.namespace, image: annotations['io.kubernetes.cri.image-name'] ?? annotations['kybernate.io/image'], bundle: c.bundle },
      spec: { digest: specDigest(c.bundle) },
      versions: { criu: facts.criu ?? 'unknown', runc: facts.runc ?? 'unknown', kernel: facts.kernel, shim: facts.shim, ...(facts.driver ? { driver: facts.driver } : {}) },
      gpus: gpu.cudaPids.length > 0 ? gpusOfSpec(spec, facts.gpus) : [],
      // nsPids: the pids CRIU restores them as, to find them again after a restore.
      cuda: { pids: gpu.cudaPids, nsPids, deviceMemoryBytes: gpu.deviceMemoryBytes },
      options: { ...manifestOptions(opts), suspendedInPlace: !!c.gpuSuspension },
      steps: steps.map((s) => ({ step: s.pid ? `${s.step}:${s.pid}` : s.step, ms: Math.round(s.ms * 1000) / 1000 })),
    }, { durable: opts.exit });
    steps.push({ step: 'manifest', ms: performance.now() - tManifest });
    return snapshot;
  };

  // --exit: CRIU kills the processes only after the gate's verdict; without a gate the container is
  // frozen for the dump and killed by us.
  const gate = opts.exit ? CriuGate.of(c.bundle, annotations) : undefined;
  const killOurselves = opts.exit && !gate;
  let frozenHere = false;
  if (killOurselves && !paused) {
    await c.runc.pause(c.id).catch((err: unknown) => { throw stepError(c, 'freeze', err); });
    frozenHere = true;
  }
  /** The CUDA processes' state back on the GPU (restore + unlock), the container thawed meanwhile if paused. */
  const resumeGpu = () => thawed(c, paused, async () => { await resumeGpuProcesses(gpu.cudaPids, {}); });
  /** Gives the container back as it was: thawed if we froze it, its GPU state back on the GPU. */
  const rollback = async (): Promise<string> => {
    let problems = '';
    if (frozenHere) await c.runc.resume(c.id).catch((e: unknown) => { problems += `; thaw failed: ${(e as Error).message}`; });
    if (gpu.suspendedHere) await resumeGpu().catch((e: unknown) => { problems += `; GPU rollback failed too: ${(e as Error).message}`; });
    return problems;
  };

  const workPath = opts.workPath ?? path.join(c.bundle, 'criu-work');
  fs.rmSync(workPath, { recursive: true, force: true });
  fs.mkdirSync(workPath, { recursive: true, mode: 0o700 });
  const tDump = performance.now();
  gate?.arm('post-dump');
  let snapshot: Snapshot | undefined;
  let manifestError: unknown;
  try {
    const dump = c.runc.checkpoint(c.id, {
      imagePath: dir, workPath, leaveRunning: !opts.exit || killOurselves, parentPath: opts.parentPath, emptyNamespaces: opts.emptyNamespaces,
      tcpEstablished: opts.tcpEstablished, extUnixSk: opts.extUnixSk, shellJob: opts.shellJob, fileLocks: opts.fileLocks,
      manageCgroupsMode: opts.manageCgroupsMode,
    });
    dump.catch(() => undefined);
    if (gate && await gate.waitReached('post-dump', dump)) {
      // Every image is written and closed; the processes wait, seized, for the verdict.
      steps.push({ step: 'criu-dump', ms: performance.now() - tDump });
      try {
        snapshot = await commitManifest();
      } catch (err) {
        manifestError = err;
      }
      gate.open('post-dump', manifestError === undefined);
    }
    await dump;
  } catch (err) {
    const problems = await rollback();
    if (manifestError !== undefined) {
      throw stepError(c, 'manifest', manifestError, ` (the container was resumed and keeps running${problems})`);
    }
    const log = path.join(workPath, 'dump.log');
    const kept = path.join(c.bundle, 'criu-dump.log');
    try { fs.copyFileSync(log, kept); } catch { /* criu may have failed before it logged */ }
    const detail = criuErrors(log);
    throw stepError(c, 'criu-dump', err, `${detail ? ` (criu: ${detail})` : ''}; log: ${kept}${problems}`);
  } finally {
    gate?.disarm();
  }
  if (!snapshot) steps.push({ step: 'criu-dump', ms: performance.now() - tDump });
  if (!opts.workPath) {
    keepCriStatsDump(spec, c.id, workPath);
    fs.rmSync(workPath, { recursive: true, force: true });
  }

  // A container left running gets its GPU state back; one that exited has none to get back.
  if (!opts.exit && gpu.suspendedHere) {
    const tResume = performance.now();
    try {
      await resumeGpu();
    } catch (err) {
      throw stepError(c, 'cuda-restore', err, ' (the images were written; the workload\'s GPU state could not be restored)');
    }
    steps.push({ step: 'cuda-resume', ms: performance.now() - tResume });
  }

  if (!snapshot) {
    try {
      snapshot = await commitManifest();
    } catch (err) {
      // Left running, or (--exit without a gate) still frozen: either way it goes on as before. With a gate
      // that CRIU never ran (a runc that ignored org.criu.config) CRIU has killed it already: say so.
      const problems = killOurselves ? await rollback() : '';
      const fate = !opts.exit ? '' : killOurselves ? ' (the container keeps running)'
        : ' (CRIU ran without the gate and the container has exited; its snapshot is incomplete)';
      throw stepError(c, 'manifest', err, `${fate}${problems}`);
    }
  }
  if (killOurselves) {
    // Still frozen since its dump: SIGKILL is delivered before it could run again.
    await c.runc.kill(c.id, 9, true).catch((err: unknown) => { throw stepError(c, 'exit', err, ` (the snapshot in ${dir} is complete)`); });
  }
  if (opts.exit) {
    await Promise.race([c.init.wait(), new Promise((r) => setTimeout(r, EXIT_WAIT_MS).unref())]);
  }
  return { snapshot, manifest: snapshot.manifest, steps };
}
