// The Task service: the RPC surface. Each handler looks up the container, calls one method on it and
// publishes the matching event; errors travel as KybernateErrors and become gRPC codes in the ttrpc layer.
// Exits arrive from the one reaper through handleExit().
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import Long from 'long';
import type { Logger } from 'pino';
import { containerd, google } from '../gen/proto';
import { KybernateError, errNotFound } from '../errors';
import { checkpointContainer } from './checkpoint';
import { checkpointDefault, parseCheckpointOptions } from './checkpoint-options';
import { Container } from './container';
import { resumeInQueue } from './suspend';
import { exitedUnder } from './operation-queue';
import type { MountSpec } from './mount';
import { parseRuntimeOptions, typeName } from './options';
import type { Process } from './process/process';
import type { ExitInfo, StatusName } from './process/types';
import type { Publisher } from './publisher';
import { VERSION } from '../version';
import { LocalDirectoryStore, type SnapshotStore } from '../snapshot/store';

const T = containerd.task.v2;
const E = containerd.events;
type Req<K extends keyof typeof T> = ReturnType<(typeof T)[K]['decode']>;
const EMPTY = {};
/** Go's zero time: what containerd's shims report as exited_at for a process that has not exited. */
const GO_ZERO_TIME = { seconds: Long.fromNumber(-62135596800), nanos: 0 };
const LINUX_RESOURCES_URL = 'types.containerd.io/opencontainers/runtime-spec/1/LinuxResources';

const STATUS: Record<StatusName, number> = {
  created: containerd.v1.types.Status.CREATED,
  running: containerd.v1.types.Status.RUNNING,
  paused: containerd.v1.types.Status.PAUSED,
  stopped: containerd.v1.types.Status.STOPPED,
  deleted: containerd.v1.types.Status.STOPPED,
};

function timestamp(d: Date | undefined): google.protobuf.ITimestamp {
  if (!d) return GO_ZERO_TIME;
  const ms = d.getTime();
  return { seconds: Long.fromNumber(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1e6 };
}

export interface ServiceDeps {
  namespace: string;
  publisher: Publisher;
  log: Logger;
  /** Called when Shutdown finds no containers left. */
  onShutdown: () => void;
  /** Where checkpoints go and restores come from (default: directories on this node, as containerd names them). */
  store?: SnapshotStore;
}

export class TaskService {
  readonly containers = new Map<string, Container>();
  /** Ids whose Create is in flight: not in `containers` yet, but taken. */
  private readonly creating = new Set<string>();
  /**
   * Exits of pids not known yet, held while a Create or Start is in flight: a process may exit before
   * `runc create`/`runc exec` returned its pid (an init killed before Start, an exec that exits at once).
   * They are matched again when that call is done, after its event was queued (TaskCreate/TaskStart
   * before TaskExit), as containerd's runc shim does (preStart/handleStarted).
   */
  private pendingExits: Array<{ pid: number; status: number }> = [];
  /** Processes whose Start is in flight: their exits wait for their start event. */
  private readonly starting = new Set<Process>();
  private opsInFlight = 0;
  private readonly store: SnapshotStore;

  constructor(private readonly deps: ServiceDeps) {
    this.store = deps.store ?? new LocalDirectoryStore();
  }

  private container(id: string): Container {
    const c = this.containers.get(id);
    if (!c) throw errNotFound(`container ${id} not created`);
    return c;
  }

  private publish(topic: string, type: string, value: Uint8Array): void {
    this.deps.publisher.publish(topic, type, value);
  }

  async create(r: Req<'CreateTaskRequest'>): Promise<containerd.task.v2.ICreateTaskResponse> {
    if (this.containers.has(r.id) || this.creating.has(r.id)) throw new KybernateError('KYB_ERR_ALREADY_EXISTS', `container ${r.id} already exists`);
    const rootfs: MountSpec[] = r.rootfs.map((m) => ({ type: m.type ?? '', source: m.source ?? '', target: m.target ?? '', options: m.options ?? [] }));
    const stdio = { stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, terminal: r.terminal };
    const options = parseRuntimeOptions(r.options, this.deps.namespace);
    // containerd 2.x turns runc options' criu_image_path into `checkpoint` itself; 1.x passes it only in
    // the options for a runtime not named io.containerd.runc.*: either way it is where the restore reads.
    const checkpoint = r.checkpoint || options.criuImagePath || '';
    const t0 = performance.now();
    this.creating.add(r.id);
    this.opsInFlight++;
    try {
      const c = await Container.create({
        id: r.id, bundle: r.bundle, rootfs, stdio, options, namespace: this.deps.namespace, store: this.store,
        ...(checkpoint ? { checkpoint } : {}),
      });
      this.containers.set(r.id, c);
      // Watched before Create returns, so before Start can let the workload run: an OOM kill at its first
      // instruction is not missed (containerd's runc shim starts watching only after Start returned).
      if (checkpoint) this.deps.log.info({ id: r.id, checkpoint, ms: performance.now() - t0 }, 'created from a checkpoint');
      else await this.watchOom(c);
      this.publish('/tasks/create', 'containerd.events.TaskCreate', E.TaskCreate.encode({
        containerId: r.id, bundle: r.bundle, rootfs: r.rootfs, pid: c.init.pid, checkpoint,
        io: { stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, terminal: r.terminal },
      }).finish());
      return { pid: c.init.pid };
    } finally {
      this.creating.delete(r.id);
      this.opsInFlight--;
      // An init that died before `runc create` returned is matched now: stopped, its exit published.
      this.replayPendingExits();
    }
  }

  async start(r: Req<'StartRequest'>): Promise<containerd.task.v2.IStartResponse> {
    const c = this.container(r.id);
    const p = c.process(r.execId);
    // Exits seen while this start runs, of this process too, are held back until its start event is
    // queued (TaskStart before TaskExit, as containerd's runc shim publishes them).
    this.opsInFlight++;
    this.starting.add(p);
    try {
      await p.start();
      if (r.execId) {
        this.publish('/tasks/exec-started', 'containerd.events.TaskExecStarted', E.TaskExecStarted.encode({ containerId: c.id, execId: r.execId, pid: p.pid }).finish());
      } else {
        if (c.init.restore) this.deps.log.info({ id: c.id, pid: p.pid, snapshot: c.init.restore.snapshot.id, steps: c.init.restore.steps }, 'restored');
        this.publish('/tasks/start', 'containerd.events.TaskStart', E.TaskStart.encode({ containerId: c.id, pid: p.pid }).finish());
        // A restored init has a pid only now; a created one is watched from Create on.
        if (c.init.restore) await this.watchOom(c);
      }
    } finally {
      this.starting.delete(p);
      this.opsInFlight--;
      this.replayPendingExits();
    }
    return { pid: p.pid };
  }

  async delete(r: Req<'DeleteRequest'>): Promise<containerd.task.v2.IDeleteResponse> {
    const c = this.container(r.id);
    if (r.execId) {
      const p = await c.deleteExec(r.execId);
      return { pid: p.pid, exitStatus: p.exit?.status ?? 0, exitedAt: timestamp(p.exit?.exitedAt) };
    }
    await c.delete();
    this.containers.delete(r.id);
    this.oomWatches.get(c)?.close();
    this.oomWatches.delete(c);
    const p = c.init;
    this.publish('/tasks/delete', 'containerd.events.TaskDelete', E.TaskDelete.encode({
      containerId: c.id, pid: p.pid, exitStatus: p.exit?.status ?? 0, exitedAt: timestamp(p.exit?.exitedAt),
    }).finish());
    return { pid: p.pid, exitStatus: p.exit?.status ?? 0, exitedAt: timestamp(p.exit?.exitedAt) };
  }

  async state(r: Req<'StateRequest'>): Promise<containerd.task.v2.IStateResponse> {
    const c = this.container(r.id);
    const p = c.process(r.execId);
    return {
      id: p.id, bundle: c.bundle, pid: p.pid, status: STATUS[p.status],
      stdin: p.stdio.stdin, stdout: p.stdio.stdout, stderr: p.stdio.stderr, terminal: p.stdio.terminal,
      exitStatus: p.exit?.status ?? 0, exitedAt: timestamp(p.exit?.exitedAt), execId: r.execId,
    };
  }

  async exec(r: Req<'ExecProcessRequest'>): Promise<object> {
    const c = this.container(r.id);
    const spec = r.spec?.value ?? new Uint8Array();
    c.addExec(r.execId, { stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, terminal: r.terminal }, spec);
    this.publish('/tasks/exec-added', 'containerd.events.TaskExecAdded', E.TaskExecAdded.encode({ containerId: c.id, execId: r.execId }).finish());
    return EMPTY;
  }

  async kill(r: Req<'KillRequest'>): Promise<object> {
    await this.container(r.id).process(r.execId).kill(r.signal, r.all);
    return EMPTY;
  }

  async resizePty(r: Req<'ResizePtyRequest'>): Promise<object> {
    const p = this.container(r.id).process(r.execId);
    p.io?.resize(r.width, r.height);
    return EMPTY;
  }

  async closeIO(r: Req<'CloseIORequest'>): Promise<object> {
    const p = this.container(r.id).process(r.execId);
    if (r.stdin) p.io?.closeStdin();
    return EMPTY;
  }

  async pause(r: Req<'PauseRequest'>): Promise<object> {
    await this.container(r.id).init.pause();
    this.publish('/tasks/paused', 'containerd.events.TaskPaused', E.TaskPaused.encode({ containerId: r.id }).finish());
    return EMPTY;
  }

  async resume(r: Req<'ResumeRequest'>): Promise<object> {
    const c = this.container(r.id);
    // A container suspended in place is frozen with its GPU state in host memory: resuming only the
    // cgroup would leave its CUDA processes locked, so Task.Resume resumes the GPU too. Decided inside
    // the queue: a suspend queued before this resume has set gpuSuspension by then.
    await c.ops.run('resume', async () => {
      if (c.gpuSuspension) await resumeInQueue(c);
      else await c.init.resumeInQueue();
    });
    this.publish('/tasks/resumed', 'containerd.events.TaskResumed', E.TaskResumed.encode({ containerId: r.id }).finish());
    return EMPTY;
  }

  async pids(r: Req<'PidsRequest'>): Promise<containerd.task.v2.IPidsResponse> {
    const c = this.container(r.id);
    const pids = await c.pids();
    const execByPid = new Map([...c.execs.values()].filter((e) => e.pid > 0).map((e) => [e.pid, e.id]));
    return {
      processes: pids.map((pid) => {
        const execId = execByPid.get(pid);
        if (!execId) return { pid };
        const info = containerd.runc.v1.ProcessDetails.encode({ execId }).finish();
        return { pid, info: { type_url: 'containerd.runc.v1.ProcessDetails', value: info } };
      }),
    };
  }

  async update(r: Req<'UpdateTaskRequest'>): Promise<object> {
    const c = this.container(r.id);
    if (r.resources?.type_url && r.resources.type_url !== LINUX_RESOURCES_URL && typeName(r.resources.type_url) !== 'LinuxResources') {
      throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `unsupported resources type ${r.resources.type_url}`);
    }
    const json = Buffer.from(r.resources?.value ?? new Uint8Array()).toString('utf8') || '{}';
    try {
      JSON.parse(json);
    } catch (err) {
      throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `invalid LinuxResources: ${(err as Error).message}`);
    }
    await c.init.update(json);
    return EMPTY;
  }

  async wait(r: Req<'WaitRequest'>): Promise<containerd.task.v2.IWaitResponse> {
    const p = this.container(r.id).process(r.execId);
    const exit = await p.wait();
    return { exitStatus: exit.status, exitedAt: timestamp(exit.exitedAt) };
  }

  async stats(r: Req<'StatsRequest'>): Promise<containerd.task.v2.IStatsResponse> {
    const c = this.container(r.id);
    if (c.init.pid <= 0 || c.init.exit) throw errNotFound(`container ${r.id} is not running`);
    const { collectMetrics } = await import('./cgroups');
    const m = await collectMetrics(c.init.pid);
    return { stats: { type_url: m.typeUrl, value: m.value } };
  }

  async connect(r: Req<'ConnectRequest'>): Promise<containerd.task.v2.IConnectResponse> {
    const c = this.containers.get(r.id);
    return { shimPid: process.pid, taskPid: c?.init.pid ?? 0, version: VERSION };
  }

  async shutdown(_r: Req<'ShutdownRequest'>): Promise<object> {
    // A shared shim keeps serving while any container of its group remains.
    if (this.containers.size === 0) setImmediate(this.deps.onShutdown);
    return EMPTY;
  }

  async checkpoint(r: Req<'CheckpointTaskRequest'>): Promise<object> {
    const c = this.container(r.id);
    if (!r.path) throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', 'checkpoint path is empty');
    const opts = parseCheckpointOptions(r.options, r.options?.type_url ? undefined : this.checkpointDefaultOf(c));
    // A Kill during a checkpoint that leaves the container running ends it as a precondition failure. An
    // --exit checkpoint ends the container itself: its failures say what happened on their own.
    const work = () => checkpointContainer(c, r.path, opts, this.store);
    const { manifest, steps } = await c.init.checkpoint(opts.exit ? work : () => exitedUnder(c, 'checkpoint', work));
    this.deps.log.info({ id: c.id, path: r.path, steps, cudaPids: manifest.cuda.pids, bytes: manifest.files.reduce((n, f) => n + f.size, 0) }, 'checkpointed');
    this.publish('/tasks/checkpointed', 'containerd.events.TaskCheckpointed', E.TaskCheckpointed.encode({ containerId: c.id, checkpoint: r.path }).finish());
    return EMPTY;
  }

  /** What a checkpoint request without options means for `c` (checkpoint-options.ts), logged. */
  private checkpointDefaultOf(c: Container): { exit: boolean } {
    let annotations: Record<string, unknown> = {};
    try {
      const spec = JSON.parse(readFileSync(join(c.bundle, 'config.json'), 'utf8')) as { annotations?: Record<string, unknown> };
      annotations = spec.annotations ?? {};
    } catch {
      // Create read this spec; a bundle that lost it leaves the namespace to decide.
    }
    const d = checkpointDefault(c.namespace, annotations);
    this.deps.log.info({ id: c.id, exit: d.exit, reason: d.reason }, 'checkpoint request without options');
    return d;
  }

  private readonly oomWatches = new Map<Container, { close(): void }>();

  /** Never rejects: a container whose OOM kills cannot be watched still runs (with a warning). */
  private async watchOom(c: Container): Promise<void> {
    try {
      const { watchOom } = await import('./cgroups');
      if (!this.containers.has(c.id) || c.init.exit) return;
      const w = watchOom(c.init.pid, () => {
        this.publish('/tasks/oom', 'containerd.events.TaskOOM', E.TaskOOM.encode({ containerId: c.id }).finish());
      });
      this.oomWatches.set(c, w);
    } catch (err) {
      this.deps.log.warn({ id: c.id, err: String(err) }, 'cannot watch for OOM kills');
    }
  }

  /** The one place exits become state and events. */
  handleExit(pid: number, status: number): void {
    for (const c of this.containers.values()) {
      if (c.init.pid === pid && !c.init.exit && !this.heldInitExits.has(c)) {
        if (this.starting.has(c.init)) this.pendingExits.push({ pid, status });
        else this.initExited(c, status);
        return;
      }
      for (const e of c.execs.values()) {
        if (e.pid === pid && !e.exit) {
          if (this.starting.has(e)) this.pendingExits.push({ pid, status });
          else this.execExited(c, e, status);
          return;
        }
      }
    }
    if (this.opsInFlight > 0) this.pendingExits.push({ pid, status });
    else this.deps.log.debug({ pid, status }, 'exit of an unknown process');
  }

  private replayPendingExits(): void {
    const pending = this.pendingExits;
    this.pendingExits = [];
    for (const { pid, status } of pending) this.handleExit(pid, status);
  }

  private publishExit(c: Container, p: Process, exit: ExitInfo): void {
    this.publish('/tasks/exit', 'containerd.events.TaskExit', E.TaskExit.encode({
      containerId: c.id, id: p.id, pid: p.pid, exitStatus: exit.status, exitedAt: timestamp(exit.exitedAt),
    }).finish());
  }

  private execExited(c: Container, e: Process, status: number): void {
    e.setExited(status);
    this.publishExit(c, e, e.exit!);
    this.maybeFinishInit(c);
  }

  /**
   * Init exits not published yet: containerd must see the init exit last, after the exits of its execs,
   * and (in a shared pid namespace) only once the container's other processes were killed.
   */
  private readonly heldInitExits = new Map<Container, { status: number; killing: boolean }>();

  private initExited(c: Container, status: number): void {
    // With a private pid namespace the kernel kills the rest with the init. With a shared one nothing
    // does: `runc kill --all` them (as containerd's runc shim does, runc.ShouldKillAllOnExit), whether or
    // not execs run, and report the exit only after it returned, so that nothing outlives the reported exit.
    const held = { status, killing: c.sharedPidNamespace };
    this.heldInitExits.set(c, held);
    if (c.sharedPidNamespace) {
      void c.runc.kill(c.id, 9, true)
        .catch((err: unknown) => this.deps.log.warn({ id: c.id, err: String(err) }, "cannot kill the init's remaining processes"))
        .finally(() => { held.killing = false; this.maybeFinishInit(c); });
    }
    this.maybeFinishInit(c);
  }

  /** Publishes a held init exit once nothing holds it any more. */
  private maybeFinishInit(c: Container): void {
    const held = this.heldInitExits.get(c);
    if (!held || held.killing || c.runningExecs().length > 0) return;
    this.heldInitExits.delete(c);
    this.finishInit(c, held.status);
  }

  private finishInit(c: Container, status: number): void {
    // Its CUDA processes are gone, and the GPU state they held in host memory with them.
    c.gpuSuspension = undefined;
    c.init.setExited(status);
    this.publishExit(c, c.init, c.init.exit!);
  }
}
