// The container's init process, driven through runc.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { ProcessIO, type StdioConfig } from '../io';
import { INIT_PID_FILE } from '../bundle-state';
import { KybernateError, errNotFound } from '../../errors';
import { readPidFile, type Runc } from '../runc';
import { keepRestoreLog, restoreGpuState, type RestorePlan } from '../restore';
import { CriuGate } from '../criu-gate';
import { diagnoseCriuRestoreFile } from '../../criu/log';
import { Process } from './process';

export interface InitConfig {
  id: string;
  bundle: string;
  runc: Runc;
  stdio: StdioConfig;
  noPivot: boolean;
  noNewKeyring: boolean;
  namespace: string;
  /** Set for a Create with a checkpoint: create() only prepares IO, start() restores. */
  restore?: RestorePlan;
}

export class InitProcess extends Process {
  readonly kind = 'init';
  constructor(private readonly cfg: InitConfig) {
    super(cfg.id, cfg.stdio);
  }

  get bundle(): string { return this.cfg.bundle; }
  get restorePlan(): RestorePlan | undefined { return this.cfg.restore; }
  /** Step timings of the last restore (runc restore, GPU steps). */
  restoreSteps: Array<{ step: string; ms: number }> = [];
  /** Set when `runc restore` failed: runc removed the container, nothing of it runs. */
  private restoreFailed = false;

  /** runc create: the container exists and its init waits for `start`. From a checkpoint: IO only, pid 0. */
  async create(): Promise<void> {
    const io = await ProcessIO.create(this.cfg.stdio, { containerId: this.cfg.id, namespace: this.cfg.namespace });
    this.io = io;
    if (this.cfg.restore) return;
    const pidFile = path.join(this.cfg.bundle, INIT_PID_FILE);
    try {
      await this.cfg.runc.create(this.cfg.id, this.cfg.bundle, {
        pidFile, consoleSocket: io.consoleSocketPath, noPivot: this.cfg.noPivot, noNewKeyring: this.cfg.noNewKeyring,
        stdio: io.childFds,
      });
      await io.started();
      this.pid = readPidFile(pidFile);
    } catch (err) {
      io.destroy();
      throw err;
    }
  }

  async doStart(): Promise<void> {
    if (this.cfg.restore) { await this.doRestore(this.cfg.restore); return; }
    await this.cfg.runc.start(this.cfg.id);
  }

  /**
   * runc restore with this process's stdio, then the GPU state. The images' checksums are still being
   * verified while CRIU loads them; the CRIU gate holds the restored processes at post-restore, before
   * any of them executes an instruction, until every checksum matched, and a mismatch makes CRIU kill
   * them. A failed GPU step kills what was restored.
   */
  private async doRestore(plan: RestorePlan): Promise<void> {
    const io = this.io!;
    const pidFile = path.join(this.cfg.bundle, INIT_PID_FILE);
    const t0 = performance.now();
    fs.mkdirSync(plan.workPath, { recursive: true, mode: 0o700 });
    const gate = CriuGate.prepare(this.cfg.bundle);
    // Without a gate nothing could hold the processes: verify everything first.
    if (!gate) await plan.checksums;
    gate?.arm('post-restore');
    let refusal: unknown;
    plan.checksums.then(() => gate?.open('post-restore', true), (err: unknown) => { refusal = err; gate?.open('post-restore', false); });
    try {
      await this.cfg.runc.restore(this.cfg.id, {
        imagePath: plan.imagePath, workPath: plan.workPath, bundle: this.cfg.bundle, pidFile, consoleSocket: io.consoleSocketPath,
        noPivot: this.cfg.noPivot, stdio: io.childFds, ...plan.flags,
      });
    } catch (err) {
      this.restoreFailed = true;
      // A refused verdict is the reason CRIU aborted; wait for it if the abort raced the verdict's bookkeeping.
      if (refusal === undefined && gate?.reached('post-restore')) await plan.checksums.catch(() => undefined);
      if (refusal !== undefined) throw refusal;
      const log = keepRestoreLog(plan, this.cfg.bundle);
      // The common CRIU failures in one sentence with the fix; anything else as runc reported it.
      const why = log ? diagnoseCriuRestoreFile(log, { dumpCriuVersion: plan.manifest.versions.criu }) : undefined;
      if (why) throw new KybernateError(why.errorCode, `restore of ${this.cfg.id} failed at criu-restore: ${why.sentence} (CRIU log: ${log})`, { cause: err });
      throw new KybernateError('KYB_ERR_RESTORE_FAILED', `restore of ${this.cfg.id} failed at criu-restore: ${(err as Error).message}${log ? `; log: ${log}` : ''}`, { cause: err });
    } finally {
      gate?.disarm();
    }
    await io.started();
    this.pid = readPidFile(pidFile);
    this.restoreSteps = [{ step: 'runc-restore', ms: performance.now() - t0 }];
    try {
      // Settled already when the gate held the processes; otherwise (a runc that ignored the gate's
      // configuration) a corrupt image is caught here, before the GPU state is handed back.
      await plan.checksums;
      this.restoreSteps.push(...await restoreGpuState(this.cfg.runc, this.cfg.id, plan));
    } catch (err) {
      // A process whose GPU state did not come back would block in its next CUDA call forever.
      await this.cfg.runc.kill(this.cfg.id, 9, true).catch(() => undefined);
      throw err;
    }
  }

  async doDelete(): Promise<void> {
    try {
      await this.cfg.runc.delete(this.cfg.id, false);
    } catch (err) {
      // The container may be gone already (runc state removed); only a still-existing container is an error.
      if (!/does not exist|not found/i.test((err as Error).message)) throw err;
    }
    await this.io?.drain();
    this.io?.destroy();
  }

  async doKill(signal: number, all: boolean): Promise<void> {
    // A restore that failed in runc left no container: as for any process that is gone, NotFound
    // (containerd's forced delete then goes ahead).
    if (this.restoreFailed) throw errNotFound('process not running: its restore failed');
    await this.cfg.runc.kill(this.cfg.id, signal, all);
  }
  async doPause(): Promise<void> { await this.cfg.runc.pause(this.cfg.id); }
  async doResume(): Promise<void> { await this.cfg.runc.resume(this.cfg.id); }
  async doUpdate(resourcesJson: string): Promise<void> { await this.cfg.runc.update(this.cfg.id, resourcesJson); }
}
