// An additional process in a running container (`ctr task exec`), started with `runc exec --detach`.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { errNotFound } from '../../errors';
import { ProcessIO, type StdioConfig } from '../io';
import { readPidFile, type Runc } from '../runc';
import { Process } from './process';

export interface ExecConfig {
  containerId: string;
  execId: string;
  bundle: string;
  runc: Runc;
  stdio: StdioConfig;
  /** OCI Process JSON as sent by containerd. */
  spec: Uint8Array;
  namespace: string;
}

export class ExecProcess extends Process {
  readonly kind = 'exec';
  constructor(private readonly cfg: ExecConfig) {
    super(cfg.execId, cfg.stdio);
  }

  async doStart(): Promise<void> {
    const { bundle, execId } = this.cfg;
    const specFile = path.join(bundle, `exec-${execId}.json`);
    const pidFile = path.join(bundle, `exec-${execId}.pid`);
    fs.writeFileSync(specFile, this.cfg.spec, { mode: 0o600 });
    const io = await ProcessIO.create(this.cfg.stdio, { containerId: this.cfg.containerId, namespace: this.cfg.namespace });
    this.io = io;
    try {
      await this.cfg.runc.exec(this.cfg.containerId, specFile, { pidFile, consoleSocket: io.consoleSocketPath, stdio: io.childFds });
      await io.started();
      this.pid = readPidFile(pidFile);
    } catch (err) {
      io.destroy();
      throw err;
    } finally {
      fs.rmSync(specFile, { force: true });
      fs.rmSync(pidFile, { force: true });
    }
  }

  async doDelete(): Promise<void> {
    await this.io?.drain();
    this.io?.destroy();
  }

  async doKill(signal: number): Promise<void> {
    try {
      process.kill(this.pid, signal);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') throw errNotFound('process already finished');
      throw err;
    }
  }
}
