// The container's init process, driven through runc.
import * as path from 'node:path';
import { ProcessIO, type StdioConfig } from '../io';
import { INIT_PID_FILE } from '../bundle-state';
import { KybernateError, errNotFound } from '../../errors';
import { readPidFile, type Runc } from '../runc';
import type { Restore } from './restore';
import { Process } from './process';
import type { OperationQueue } from '../operation-queue';

export interface InitConfig {
  id: string;
  bundle: string;
  runc: Runc;
  stdio: StdioConfig;
  noPivot: boolean;
  noNewKeyring: boolean;
  namespace: string;
  /** The container's operation queue: the init's operations are the container's. */
  queue: OperationQueue;
  /** Set for a Create with a checkpoint: create() only prepares IO, start() restores. */
  restore?: Restore;
}

export class InitProcess extends Process {
  readonly kind = 'init';
  constructor(private readonly cfg: InitConfig) {
    super(cfg.id, cfg.stdio, cfg.queue);
  }

  get bundle(): string { return this.cfg.bundle; }
  /** The restore this init runs at Start instead of the spec's process, if created from a snapshot. */
  get restore(): Restore | undefined { return this.cfg.restore; }

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
    if (!this.cfg.restore) { await this.cfg.runc.start(this.cfg.id); return; }
    this.pid = await this.cfg.restore.run(this.io!, { pidFile: path.join(this.cfg.bundle, INIT_PID_FILE), noPivot: this.cfg.noPivot });
  }

  async doDelete(): Promise<void> {
    try {
      await this.cfg.runc.delete(this.cfg.id, false);
    } catch (err) {
      // The container may be gone already (runc state removed); only a still-existing container is an error.
      if (!(KybernateError.is(err) && err.code === 'KYB_ERR_NOT_FOUND')) throw err;
    }
    await this.io?.drain();
    this.io?.destroy();
  }

  async doKill(signal: number, all: boolean): Promise<void> {
    // A restore that failed in runc left no container: as for any process that is gone, NotFound
    // (containerd's forced delete then goes ahead).
    if (this.cfg.restore?.containerGone) throw errNotFound('process not running: its restore failed');
    await this.cfg.runc.kill(this.cfg.id, signal, all);
  }
  async doPause(): Promise<void> { await this.cfg.runc.pause(this.cfg.id); }
  async doResume(): Promise<void> { await this.cfg.runc.resume(this.cfg.id); }
  async doUpdate(resourcesJson: string): Promise<void> { await this.cfg.runc.update(this.cfg.id, resourcesJson); }
}
