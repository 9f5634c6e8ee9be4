// Restore's two halves around `runc restore`: before it, the checkpoint is verified against its manifest
// and this node (nothing starts from an incomplete, corrupt or incompatible image); after it, the CUDA
// processes get their GPU state back (restore + unlock on their new host pids).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { KybernateError } from '../errors';
import { resumeGpuProcesses } from '../gpu/engine';
import { checkManifest, readManifest, verifyChecksums, type Expectations, type SnapshotManifest } from '../snapshot/manifest';
import type { CriuFlags, Runc } from './runc';
import { criuFlagsOf } from './checkpoint-options';
import { nodeFacts, nsPidOf, warmCuda } from '../host/facts';

export interface RestorePlan {
  imagePath: string;
  workPath: string;
  manifest: SnapshotManifest;
  flags: CriuFlags;
  /** Every file's checksums, verified from Create on; rejects with KYB_ERR_CHECKPOINT_INVALID. */
  checksums: Promise<void>;
}

/** Verifies `dir` and returns how to restore it. Throws KYB_ERR_CHECKPOINT_INVALID / _INCOMPATIBLE. */
export async function planRestore(dir: string, bundle: string, runc: Runc, workPath?: string): Promise<RestorePlan> {
  if (!path.isAbsolute(dir)) throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `checkpoint path must be absolute: ${JSON.stringify(dir)}`);
  // Tool versions (two short commands) are read while the manifest is.
  const factsPromise = nodeFacts(runc.config.binary, 'proc');
  factsPromise.catch(() => undefined);
  const first = await readManifest(dir);
  const withGpus = (first.cuda?.pids?.length ?? 0) > 0;
  if (withGpus) warmCuda();
  const facts = await factsPromise;
  const expect: Expectations = {};
  if (facts.criu) expect.criuVersion = facts.criu;
  if (facts.driver) expect.driverVersion = facts.driver;
  if (withGpus) expect.gpus = facts.gpus.map((g) => ({ uuid: g.uuid, name: g.name, memoryBytes: g.memoryBytes }));
  const manifest = await checkManifest(dir, expect);
  // Reading every byte takes ~0.3 s per 4 GiB even on 16 cores: it runs while Create returns and
  // `runc restore` loads the images, and the restore gate holds the processes until it has finished.
  const checksums = verifyChecksums(dir, manifest);
  checksums.catch(() => undefined);
  const flags = criuFlagsOf(manifest.options);
  const work = workPath ?? path.join(bundle, 'criu-work');
  return { imagePath: dir, workPath: work, manifest, flags, checksums };
}

/** Host pids of the restored container keyed by the pid their namespace gives them (CRIU keeps those). */
function hostPidsByNsPid(pids: number[]): Map<number, number> {
  const out = new Map<number, number>();
  for (const pid of pids) {
    try {
      out.set(nsPidOf(pid), pid);
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/**
 * After `runc restore`: CUDA restore + unlock of every process the checkpoint holds GPU state for.
 * A container restored frozen (dumped while paused) is thawed first: the driver hangs on frozen processes.
 */
export async function restoreGpuState(runc: Runc, id: string, plan: RestorePlan): Promise<Array<{ step: string; ms: number }>> {
  const nsPids = plan.manifest.cuda.nsPids ?? [];
  if (nsPids.length === 0) return [];
  const t0 = performance.now();
  const state = await runc.state(id);
  if (state.status === 'paused') await runc.resume(id);
  const byNs = hostPidsByNsPid(await runc.ps(id));
  const targets = nsPids.map((ns) => {
    const host = byNs.get(ns);
    if (host === undefined) throw new KybernateError('KYB_ERR_RESTORE_FAILED', `restore of ${id} failed at cuda-restore: process ${ns} (pid in the container) was not restored`);
    return host;
  });
  const steps = await resumeGpuProcesses(targets, {}).catch((err: unknown) => {
    throw KybernateError.is(err) ? err : new KybernateError('KYB_ERR_RESTORE_FAILED', `restore of ${id} failed at cuda-restore: ${(err as Error).message}`, { cause: err });
  });
  return [{ step: 'gpu-total', ms: performance.now() - t0 }, ...steps.map((s) => ({ step: `${s.step}:${s.pid}`, ms: s.ms }))];
}

/** A failed restore keeps CRIU's log next to the bundle, as a failed dump does. */
export function keepRestoreLog(plan: RestorePlan, bundle: string): string | undefined {
  const kept = path.join(bundle, 'criu-restore.log');
  try {
    fs.copyFileSync(path.join(plan.workPath, 'restore.log'), kept);
    return kept;
  } catch {
    return undefined;
  }
}
