// A container's restore from a snapshot, as one object owned by the init process: planned at Create
// (the snapshot opened through the store and checked against this node, its checksums verified from
// then on) and carried out at Start (`runc restore` under the CRIU gate, then the GPU state).
//
// Invariants:
// - Nothing starts from an incomplete, corrupt or incompatible snapshot: Create refuses what the
//   manifest alone shows wrong; every byte is read against its sha256 while CRIU loads the images, and
//   the CRIU gate holds the restored processes at post-restore, before any of them executes an
//   instruction, until the verdict; a mismatch makes CRIU kill them.
// - A process whose GPU state did not come back is killed: it would block in its next CUDA call forever.
// - After a failed `runc restore` no container exists (runc removed it): `containerGone` says so.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { KybernateError } from '../../errors';
import { resumeGpuProcesses } from '../../gpu/engine';
import { diagnoseCriuRestoreFile } from '../../criu/log';
import { readManifest, type Expectations, type ContainerManifest } from '../../snapshot/manifest';
import type { Snapshot, SnapshotStore } from '../../snapshot/store';
import { nodeFacts, nsPidOf, warmCuda } from '../../host/facts';
import { criuFlagsOf } from '../checkpoint-options';
import { CriuGate } from '../criu-gate';
import { readPidFile, type CriuFlags, type Runc } from '../runc';
import type { ProcessIO } from '../io';

export interface RestoreStep { step: string; ms: number }

export interface RestoreTarget {
  id: string;
  bundle: string;
  runc: Runc;
  /** CRIU's work directory (default <bundle>/criu-work). */
  workPath?: string;
}

export class Restore {
  /** Set when `runc restore` failed: runc removed the container, nothing of it runs. */
  containerGone = false;
  /** Step timings of the restore (runc restore, GPU steps), once it ran. */
  steps: RestoreStep[] = [];
  private constructor(
    private readonly target: RestoreTarget,
    readonly snapshot: Snapshot,
    readonly manifest: ContainerManifest,
    private readonly workPath: string,
    private readonly flags: CriuFlags,
    /** Every file's checksums, verified from Create on; rejects with KYB_ERR_CHECKPOINT_INVALID. */
    private readonly checksums: Promise<void>,
  ) {}

  /** Opens the snapshot at `ref` and checks it against this node. Throws KYB_ERR_CHECKPOINT_INVALID / _INCOMPATIBLE. */
  static async plan(ref: string, target: RestoreTarget, store: SnapshotStore): Promise<Restore> {
    if (!path.isAbsolute(ref)) throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `checkpoint path must be absolute: ${JSON.stringify(ref)}`);
    // Tool versions (two short commands) are read while the manifest is.
    const factsPromise = nodeFacts(target.runc.config.binary, 'proc');
    factsPromise.catch(() => undefined);
    const first = await readManifest(ref);
    const withGpus = (first.cuda?.pids?.length ?? 0) > 0;
    if (withGpus) warmCuda();
    const facts = await factsPromise;
    const expect: Expectations = {};
    if (facts.criu) expect.criuVersion = facts.criu;
    if (facts.driver) expect.driverVersion = facts.driver;
    if (withGpus) expect.gpus = facts.gpus.map((g) => ({ uuid: g.uuid, name: g.name, memoryBytes: g.memoryBytes }));
    const snapshot = await store.open(ref, expect);
    const m = snapshot.manifest;
    if (m.kind !== 'container') {
      throw new KybernateError('KYB_ERR_CHECKPOINT_INVALID',
        `checkpoint ${ref} is a process tree's (pid ${m.process.pid}, from \`kybernate process checkpoint\`): restore it with \`kybernate process restore\``);
    }
    // Reading every byte takes ~0.3 s per 4 GiB even on 16 cores: it runs while Create returns and
    // `runc restore` loads the images, and the restore gate holds the processes until it has finished.
    const checksums = snapshot.verify();
    checksums.catch(() => undefined);
    const workPath = target.workPath ?? path.join(target.bundle, 'criu-work');
    return new Restore(target, snapshot, m, workPath, criuFlagsOf(m.options), checksums);
  }

  /** `runc restore` with the init's stdio, then the GPU state; returns the restored init's pid. */
  async run(io: ProcessIO, opts: { pidFile: string; noPivot: boolean }): Promise<number> {
    const { id, bundle, runc } = this.target;
    const t0 = performance.now();
    fs.mkdirSync(this.workPath, { recursive: true, mode: 0o700 });
    const gate = CriuGate.prepare(bundle);
    // Without a gate nothing could hold the processes: verify everything first.
    if (!gate) await this.checksums;
    gate?.arm('post-restore');
    let refusal: unknown;
    this.checksums.then(() => gate?.open('post-restore', true), (err: unknown) => { refusal = err; gate?.open('post-restore', false); });
    try {
      await runc.restore(id, {
        imagePath: this.snapshot.dir, workPath: this.workPath, bundle, pidFile: opts.pidFile, consoleSocket: io.consoleSocketPath,
        noPivot: opts.noPivot, stdio: io.childFds, ...this.flags,
      });
    } catch (err) {
      this.containerGone = true;
      // A refused verdict is the reason CRIU aborted; wait for it if the abort raced the verdict's bookkeeping.
      if (refusal === undefined && gate?.reached('post-restore')) await this.checksums.catch(() => undefined);
      if (refusal !== undefined) throw refusal;
      throw this.criuFailure(err);
    } finally {
      gate?.disarm();
    }
    await io.started();
    const pid = readPidFile(opts.pidFile);
    this.steps = [{ step: 'runc-restore', ms: performance.now() - t0 }];
    try {
      // Settled already when the gate held the processes; otherwise (a runc that ignored the gate's
      // configuration) a corrupt image is caught here, before the GPU state is handed back.
      await this.checksums;
      this.steps.push(...await this.restoreGpuState());
    } catch (err) {
      await runc.kill(id, 9, true).catch(() => undefined);
      throw err;
    }
    return pid;
  }

  /** A failed `runc restore` in one sentence with the fix where CRIU's log shows a known cause. */
  private criuFailure(err: unknown): KybernateError {
    const { id, bundle } = this.target;
    const log = this.keepLog(bundle);
    const why = log ? diagnoseCriuRestoreFile(log, { dumpCriuVersion: this.manifest.versions.criu }) : undefined;
    if (why) return new KybernateError(why.errorCode, `restore of ${id} failed at criu-restore: ${why.sentence} (CRIU log: ${log})`, { cause: err });
    return new KybernateError('KYB_ERR_RESTORE_FAILED', `restore of ${id} failed at criu-restore: ${(err as Error).message}${log ? `; log: ${log}` : ''}`, { cause: err });
  }

  /** A failed restore keeps CRIU's log next to the bundle, as a failed dump does. */
  private keepLog(bundle: string): string | undefined {
    const kept = path.join(bundle, 'criu-restore.log');
    try {
      fs.copyFileSync(path.join(this.workPath, 'restore.log'), kept);
      return kept;
    } catch {
      return undefined;
    }
  }

  /**
   * CUDA restore + unlock of every process the snapshot holds GPU state for, found by the pid their
   * namespace gives them (CRIU keeps those). A container restored frozen (dumped while paused) is
   * thawed first: the driver hangs on frozen processes.
   */
  private async restoreGpuState(): Promise<RestoreStep[]> {
    const { id, runc } = this.target;
    const nsPids = this.manifest.cuda.nsPids ?? [];
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
}

/** Host pids of the restored container keyed by the pid their namespace gives them. */
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
