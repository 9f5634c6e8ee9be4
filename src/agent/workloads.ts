// The level-based view of the node's Kybernate workloads: computed on every call from containerd (every
// namespace, containers whose runtime is ours, each one's task), the shims (Control.Status: suspended or
// not) and the snapshot index (a snapshot and no running task: checkpointed). Nothing about a workload's
// state is kept only in the agent, so an agent restart loses nothing; what the agent remembers (when it
// first saw a state, GPU memory it freed) only adds detail.
import type { ContainerdClient, ContainerInfo, TaskInfo } from '../containerd/client';
import { KybernateError, errNotFound } from '../errors';
import { kybernate } from '../gen/proto';
import { validateId } from '../ids';
import { ShimClient } from '../shim-client/client';
import { CONTROL_SERVICE } from '../shim-client/control';
import { fromTimestamp } from '../timestamp';
import { RUNTIME_NAME } from '../version';
import type { GpuMemory } from './gpus';
import { processStartTime } from './proc';
import type { SnapshotInfo } from './snapshots';

export type { SnapshotInfo };

const C = kybernate.shim.v1;

export type WorkloadState = 'RUNNING' | 'PAUSED' | 'SUSPENDED' | 'CHECKPOINTED' | 'STOPPED' | 'UNKNOWN';

/** The part of the snapshot directory the view needs (SnapshotDirectory in snapshots.ts). */
export interface SnapshotIndex {
  /** The container's newest complete snapshot, if any. */
  newest(namespace: string, id: string): Promise<SnapshotInfo | undefined>;
}

export interface WorkloadView {
  namespace: string;
  id: string;
  state: WorkloadState;
  /** The init's host pid (0 without a task). */
  pid: number;
  image: string;
  /** containerd's task status ('' without a task). */
  taskStatus: string;
  gpuMemoryBytes: number;
  savedGpuMemoryBytes: number;
  /** The suspended CUDA processes (empty unless suspended). */
  cudaPids: number[];
  snapshot?: SnapshotInfo;
  /** Since when it is in its state, as far as the agent knows. */
  since?: Date;
}

export interface WorkloadsDeps {
  containerd: Pick<ContainerdClient, 'namespaces' | 'containers' | 'container' | 'task'>;
  /** containerd's state directory, where the shims' addresses are. */
  containerdState: string;
  snapshots: SnapshotIndex;
  gpuMemory: Pick<GpuMemory, 'ofContainer'>;
  log: { warn(obj: object, msg: string): void };
}

/** containerd's filter for our containers; the result is checked again, so a filter it ignores costs nothing. */
const RUNTIME_FILTER = `runtime.name==${JSON.stringify(RUNTIME_NAME)}`;
/** A shim that does not answer its Status within this long is left out of the view (the task's state stands). */
const SHIM_TIMEOUT_MS = 5_000;

interface Remembered { state: WorkloadState; pid: number; since?: Date; savedGpuMemoryBytes: number }

export class Workloads {
  /** What the agent saw last of each workload: when its state began, memory it saved. */
  private readonly seen = new Map<string, Remembered>();

  constructor(private readonly deps: WorkloadsDeps) {}

  /** Every workload of `namespace`, or of every namespace when it is ''. */
  async list(namespace = '', o: { signal?: AbortSignal } = {}): Promise<WorkloadView[]> {
    if (namespace) validateId('namespace', namespace);
    const namespaces = namespace ? [namespace] : await this.deps.containerd.namespaces(o);
    const perNamespace = await Promise.all(namespaces.map(async (ns) => {
      const containers = (await this.deps.containerd.containers(ns, [RUNTIME_FILTER], o)).filter((c) => c.runtime === RUNTIME_NAME);
      return Promise.all(containers.map((c) => this.view(ns, c, o)));
    }));
    const all = perNamespace.flat().sort((a, b) => a.namespace.localeCompare(b.namespace) || a.id.localeCompare(b.id));
    // What is not listed (within the namespaces listed) is gone: nothing to remember of it.
    const listed = new Set(all.map((w) => key(w.namespace, w.id)));
    for (const k of this.seen.keys()) {
      if (!listed.has(k) && namespaces.includes(k.slice(0, k.indexOf('/')))) this.seen.delete(k);
    }
    return all;
  }

  /**
   * One workload; KYB_ERR_NOT_FOUND when there is no such container or it is not run by Kybernate.
   * `fresh`: its GPU memory measured now (nvidia-smi answers are otherwise reused for a second).
   */
  async get(namespace: string, id: string, o: { signal?: AbortSignal; fresh?: boolean } = {}): Promise<WorkloadView> {
    validateId('namespace', namespace);
    validateId('container id', id);
    return this.view(namespace, await this.container(namespace, id, o), o);
  }

  /**
   * What an operation on the task needs before it starts, and no more: the container is ours (NOT_FOUND
   * otherwise) and has a task with a process (FAILED_PRECONDITION otherwise, naming the state the full view
   * finds). No snapshot scan, shim Status or nvidia-smi: the view after the operation has those.
   */
  async requireTask(namespace: string, id: string, what: string, o: { signal?: AbortSignal } = {}): Promise<{ pid: number }> {
    validateId('namespace', namespace);
    validateId('container id', id);
    const [c, task] = await Promise.all([this.container(namespace, id, o), this.deps.containerd.task(namespace, id, o)]);
    const pid = task && task.status !== 'stopped' ? task.pid : 0;
    if (pid !== 0) return { pid };
    const w = await this.view(namespace, c, o);
    throw new KybernateError('KYB_ERR_FAILED_PRECONDITION',
      `cannot ${what} workload ${namespace}/${id}: it has no running task (it is ${w.state.toLowerCase()})`);
  }

  /** The container, if it is ours; KYB_ERR_NOT_FOUND otherwise. */
  private async container(namespace: string, id: string, o: { signal?: AbortSignal }): Promise<ContainerInfo> {
    let c: ContainerInfo;
    try {
      c = await this.deps.containerd.container(namespace, id, o);
    } catch (err) {
      if (KybernateError.is(err) && err.code === 'KYB_ERR_NOT_FOUND') throw errNotFound(`workload ${namespace}/${id}`);
      throw err;
    }
    if (c.runtime !== RUNTIME_NAME) {
      throw new KybernateError('KYB_ERR_NOT_FOUND', `workload ${namespace}/${id}: not found (the container's runtime is ${c.runtime}, not ${RUNTIME_NAME})`);
    }
    return c;
  }

  /** Remembers device memory an operation moved to host memory (the view cannot see it: Status does not report it). */
  rememberSaved(namespace: string, id: string, bytes: number): void {
    const r = this.seen.get(key(namespace, id));
    if (r) r.savedGpuMemoryBytes = bytes;
    else this.seen.set(key(namespace, id), { state: 'SUSPENDED', pid: 0, savedGpuMemoryBytes: bytes });
  }

  /** Forgets a workload that is gone. */
  forget(namespace: string, id: string): void {
    this.seen.delete(key(namespace, id));
  }

  private async view(namespace: string, c: ContainerInfo, o: { signal?: AbortSignal; fresh?: boolean }): Promise<WorkloadView> {
    const [task, snapshot] = await Promise.all([this.deps.containerd.task(namespace, c.id, o), this.deps.snapshots.newest(namespace, c.id)]);
    const live = task !== undefined && task.status !== 'stopped' && task.status !== 'unknown';
    const pid = task && task.status !== 'stopped' ? task.pid : 0;
    // A suspended container's task is paused (the shim freezes it): a running one's GPU memory is asked
    // for alongside the shim's Status, not after it (and dropped should the shim say suspended after all).
    const early = live && task.status === 'running' ? this.deps.gpuMemory.ofContainer(pid, o.fresh) : undefined;
    early?.catch(() => undefined); // awaited below unless dropped: never an unhandled rejection
    const control = live ? await this.shimStatus(namespace, c.id) : undefined;
    const suspended = control?.suspended === true;
    const state = stateOf(task, suspended, snapshot);
    const gpuMemoryBytes = live && !suspended ? await (early ?? this.deps.gpuMemory.ofContainer(pid, o.fresh)) : 0;

    const k = key(namespace, c.id);
    const before = this.seen.get(k);
    // The same state of another process (a restored task) is a new state.
    const kept = before?.state === state && (before.pid === pid || before.pid === 0);
    const since = authoritativeSince(state, task, snapshot, control?.suspendedAt, c)
      ?? (kept ? before.since : before === undefined ? firstSightSince(state, pid) : new Date());
    const saved = state === 'SUSPENDED' ? (before?.savedGpuMemoryBytes ?? 0) : 0;
    this.seen.set(k, { state, pid, since, savedGpuMemoryBytes: saved });
    return {
      namespace, id: c.id, state, pid, image: c.image, taskStatus: task?.status ?? '',
      gpuMemoryBytes,
      savedGpuMemoryBytes: state === 'CHECKPOINTED' ? snapshot?.gpuMemoryBytes ?? 0 : saved,
      cudaPids: suspended ? control?.cudaPids ?? [] : [],
      snapshot, since,
    };
  }

  /** The shim's word on GPU suspension; undefined when it cannot be asked (logged: the view goes on). */
  private async shimStatus(namespace: string, id: string): Promise<{ suspended: boolean; suspendedAt?: Date; cudaPids: number[] } | undefined> {
    let shim: ShimClient | undefined;
    try {
      shim = await ShimClient.shared(this.deps.containerdState, namespace, id);
      const r = await shim.request(CONTROL_SERVICE, 'Status', C.StatusRequest, C.StatusResponse, { id }, { timeoutMs: SHIM_TIMEOUT_MS });
      return { suspended: r.suspended === true, suspendedAt: fromTimestamp(r.suspendedAt), cudaPids: r.cudaPids ?? [] };
    } catch (err) {
      this.deps.log.warn({ namespace, id, err: (err as Error).message }, 'cannot ask the shim whether the workload is suspended');
      return undefined;
    } finally {
      shim?.close();
    }
  }
}

const key = (namespace: string, id: string): string => `${namespace}/${id}`;

function stateOf(task: TaskInfo | undefined, suspended: boolean, snapshot: SnapshotInfo | undefined): WorkloadState {
  switch (task?.status) {
    case 'created':
    case 'running':
      return suspended ? 'SUSPENDED' : 'RUNNING';
    case 'paused':
    case 'pausing':
      return suspended ? 'SUSPENDED' : 'PAUSED';
    case 'unknown':
      return 'UNKNOWN';
    default: // no task, or a stopped one
      return snapshot ? 'CHECKPOINTED' : 'STOPPED';
  }
}

/** The state's start where containerd, the shim or the snapshot records it. */
function authoritativeSince(state: WorkloadState, task: TaskInfo | undefined, snapshot: SnapshotInfo | undefined,
  suspendedAt: Date | undefined, c: ContainerInfo): Date | undefined {
  switch (state) {
    case 'SUSPENDED': return suspendedAt;
    case 'CHECKPOINTED': return snapshot?.createdAt;
    case 'STOPPED': return task ? task.exitedAt : c.createdAt;
    default: return undefined;
  }
}

/** A state first seen by this agent: a running task runs since its init started; otherwise unknown. */
function firstSightSince(state: WorkloadState, pid: number): Date | undefined {
  return state === 'RUNNING' ? processStartTime(pid) : undefined;
}
