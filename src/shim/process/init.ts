// The container's init process, driven through runc.
import * as path from 'node:path';
import { ProcessIO, type StdioConfig } from '../io';
import { INIT_PID_FILE } from '../bundle-state';
import { readPidFile, type Runc } from '../runc';
import { Process } from './process';

export interface InitConfig {
  id: string;
  bundle: string;
  runc: Runc;
  stdio: StdioConfig;
  noPivot: boolean;
  noNewKeyring: boolean;
  namespace: string;
}

export class InitProcess extends Process {
  readonly kind = 'init';
  constructor(private readonly cfg: InitConfig) {
    super(cfg.id, cfg.stdio);
  }

  get bundle(): string { return this.cfg.bundle; }

  /** runc create: the container exists and its init waits for `start`. */
  async create(): Promise<void> {
    const io = await ProcessIO.create(this.cfg.stdio, { containerId: this.cfg.id, namespace: this.cfg.namespace });
    this.io = io;
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

  async doStart(): Promise<void> { await this.cfg.runc.start(this.cfg.id); }

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

  async doKill(signal: number, all: boolean): Promise<void> { await this.cfg.runc.kill(this.cfg.id, signal, all); }
  async doPause(): Promise<void> { await this.cfg.runc.pause(this.cfg.id); }
  async doResume(): Promise<void> { await this.cfg.runc.resume(this.cfg.id); }
  async doUpdate(resourcesJson: string): Promise<void> { await this.cfg.runc.update(this.cfg.id, resourcesJson); }
}
