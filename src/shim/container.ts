// One container: turns a Create request into runc calls, owns the init process, its execs and its rootfs.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { KybernateError, errExists, errNotFound, errPrecondition } from '../errors';
import { validateId } from '../ids';
import { markDeleted, writeBundleState } from './bundle-state';
import type { StdioConfig } from './io';
import { type MountSpec, mountAll, unmountAll } from './mount';
import type { RuntimeOptions } from './options';
import { ExecProcess } from './process/exec';
import { InitProcess } from './process/init';
import type { Process } from './process/process';
import { CriuGate } from './criu-gate';
import { Restore } from './process/restore';
import type { SnapshotStore } from '../snapshot/store';
import { Runc } from './runc';
import { OperationQueue } from './operation-queue';

export interface CreateConfig {
  id: string;
  bundle: string;
  rootfs: MountSpec[];
  stdio: StdioConfig;
  options: RuntimeOptions;
  namespace: string;
  /** Restore from this snapshot (a checkpoint directory) at Start instead of running the spec's process. */
  checkpoint?: string;
  /** Where snapshots are opened from. */
  store: SnapshotStore;
}

function readSpec(bundle: string): Record<string, unknown> {
  const file = path.join(bundle, 'config.json');
  let spec: unknown;
  try {
    spec = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `invalid OCI spec ${file}: ${(err as Error).message}`, { cause: err });
  }
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) {
    throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `invalid OCI spec ${file}: not a JSON object`);
  }
  const s = spec as Record<string, unknown>;
  if (typeof s.ociVersion !== 'string') throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `invalid OCI spec ${file}: ociVersion missing`);
  if (typeof s.process !== 'object' || s.process === null) throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `invalid OCI spec ${file}: process missing`);
  return s;
}

/** A container whose CUDA processes gave their GPU state back to host memory and whose cgroup is frozen. */
export interface GpuSuspension {
  /** Host pids of the CUDA processes that were locked and checkpointed (what resume restores). */
  pids: number[];
  since: Date;
  /** Device memory the CUDA processes held when they were suspended (0 when unknown). */
  deviceMemoryBytes?: number;
}

export class Container {
  readonly execs = new Map<string, ExecProcess>();
  /** Set while the container is suspended in place (src/shim/suspend.ts); undefined otherwise. */
  gpuSuspension: GpuSuspension | undefined;
  private constructor(
    readonly id: string,
    readonly bundle: string,
    readonly runc: Runc,
    readonly init: InitProcess,
    private readonly ownsRootfs: boolean,
    readonly sharedPidNamespace: boolean,
    readonly namespace: string,
  ) {}

  /** Mounts the rootfs and runs `runc create`; on failure nothing is left behind. */
  static async create(cfg: CreateConfig): Promise<Container> {
    validateId('container id', cfg.id);
    const spec = readSpec(cfg.bundle);
    const runc = new Runc({ binary: cfg.options.runcBinary, root: cfg.options.runcRoot, bundle: cfg.bundle, logPath: path.join(cfg.bundle, 'log.json'), systemdCgroup: cfg.options.systemdCgroup });
    writeBundleState(cfg.bundle, { runcRoot: cfg.options.runcRoot, runcBinary: cfg.options.runcBinary, systemdCgroup: cfg.options.systemdCgroup });
    // A checkpoint is verified before anything is mounted or started.
    const restore = cfg.checkpoint
      ? await Restore.plan(cfg.checkpoint, { id: cfg.id, bundle: cfg.bundle, runc, ...(cfg.options.criuWorkPath ? { workPath: cfg.options.criuWorkPath } : {}) }, cfg.store)
      : undefined;
    // runc checkpoint reads CRIU's configuration file from the labels the container is created with:
    // the gate must be named now for --exit checkpoints to use it (a restore prepares it itself).
    if (!restore) CriuGate.prepare(cfg.bundle);
    const rootfs = path.join(cfg.bundle, 'rootfs');
    if (cfg.rootfs.length > 0) mountAll(cfg.rootfs, rootfs);
    const init = new InitProcess({
      queue: new OperationQueue(), id: cfg.id, bundle: cfg.bundle, runc, stdio: cfg.stdio, noPivot: cfg.options.noPivot, noNewKeyring: cfg.options.noNewKeyring,
      namespace: cfg.namespace, ...(restore ? { restore } : {}),
    });
    try {
      await init.create();
    } catch (err) {
      await runc.delete(cfg.id, true).catch(() => undefined);
      if (cfg.rootfs.length > 0) unmountAll(rootfs);
      throw err;
    }
    const namespaces = ((spec.linux as { namespaces?: Array<{ type: string; path?: string }> } | undefined)?.namespaces) ?? [];
    const pidNs = namespaces.find((n) => n.type === 'pid');
    return new Container(cfg.id, cfg.bundle, runc, init, cfg.rootfs.length > 0, !pidNs || !!pidNs.path, cfg.namespace);
  }

  /** The container's one operation queue (operation-queue.ts), shared with its init process. */
  get ops(): OperationQueue { return this.init.queue; }

  /** The init process for '' or an exec by id. */
  process(execId: string): Process {
    if (!execId) return this.init;
    const p = this.execs.get(execId);
    if (!p) throw errNotFound(`process ${execId} does not exist`);
    return p;
  }

  addExec(execId: string, stdio: StdioConfig, spec: Uint8Array): ExecProcess {
    validateId('exec id', execId);
    if (this.execs.has(execId)) throw errExists(`exec process ${execId}`);
    if (this.init.status !== 'running' && this.init.status !== 'paused') {
      throw errPrecondition(`cannot exec in a ${this.init.status} container`);
    }
    let processSpec: unknown;
    try {
      processSpec = JSON.parse(Buffer.from(spec).toString('utf8'));
    } catch (err) {
      throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `invalid exec process spec: ${(err as Error).message}`);
    }
    if (typeof processSpec !== 'object' || processSpec === null || Array.isArray(processSpec)) {
      throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', 'invalid exec process spec: not a JSON object');
    }
    // The request decides whether the exec gets a terminal, as in containerd's runc shim: runc refuses a
    // console socket for a process spec without `terminal`, and would allocate a pty nobody reads otherwise.
    const withTerminal = Buffer.from(JSON.stringify({ ...processSpec, terminal: stdio.terminal }));
    const exec = new ExecProcess({
      containerId: this.id, execId, bundle: this.bundle, runc: this.runc, stdio, spec: withTerminal, namespace: this.namespace,
    });
    this.execs.set(execId, exec);
    return exec;
  }

  async deleteExec(execId: string): Promise<ExecProcess> {
    const p = this.process(execId) as ExecProcess;
    await p.delete();
    this.execs.delete(execId);
    return p;
  }

  /** Execs that were started and have not exited. */
  runningExecs(): ExecProcess[] {
    return [...this.execs.values()].filter((e) => e.pid > 0 && !e.exit);
  }

  async delete(): Promise<void> {
    await this.init.delete();
    for (const e of this.execs.values()) e.io?.destroy();
    if (this.ownsRootfs) unmountAll(path.join(this.bundle, 'rootfs'));
    markDeleted(this.bundle);
  }

  /** Every pid in the container; the init pid is always included while it is known. */
  async pids(): Promise<number[]> {
    let pids: number[] = [];
    if (this.init.status === 'running' || this.init.status === 'paused') {
      pids = await this.runc.ps(this.id).catch(() => []);
    }
    if (this.init.pid > 0 && !pids.includes(this.init.pid) && !this.init.exit) pids.unshift(this.init.pid);
    return pids;
  }
}
