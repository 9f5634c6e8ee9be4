// A typed client of containerd's own gRPC API (Version, Namespaces, Containers, Snapshots.Mounts, Tasks,
// Events) over its unix socket, for the node agent and any other binary that drives containerd.
//
// Invariants: every namespaced call carries `containerd-namespace`; every unary call has a deadline
// (the client's default, 30 s, or CallOptions.timeoutMs) and is cancelled when CallOptions.signal aborts;
// every failure is a KybernateError whose code comes from the gRPC status (errors.ts fromStatus) and whose
// message names the method ("containerd Tasks.Get: ..."); an unreachable containerd is KYB_ERR_UNAVAILABLE
// and its message names the socket.
import { KybernateError } from '../errors';
import type { containerd } from '../gen/proto';
import { fromTimestamp } from '../timestamp';
import { toAny, toContainerInfo, toDescriptor, toTaskInfo } from './convert';
import * as M from './methods';
import { Channel, type Method } from './rpc';
import { Subscription } from './subscription';
import type { AnyMessage, CallOptions, ContainerInfo, EventEnvelope, TaskInfo } from './types';

export type { AnyMessage, CallOptions, ContainerInfo, EventEnvelope, TaskInfo, TaskStatus } from './types';

/** The default deadline of every unary call. */
export const DEFAULT_TIMEOUT_MS = 30_000;

export class ContainerdClient {
  /** containerd's socket, as given. */
  readonly address: string;
  private readonly channel: Channel;
  private readonly timeoutMs: number;
  private readonly subscriptions = new Set<Subscription>();

  /** Connects lazily: a missing socket fails the first call, not the constructor. */
  constructor(opts: { address: string; timeoutMs?: number }) {
    this.address = opts.address;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.channel = new Channel(opts.address);
  }

  async version(o?: CallOptions): Promise<{ version: string; revision: string }> {
    const r = await this.call(M.Version, {}, undefined, o);
    return { version: r.version, revision: r.revision };
  }

  /** The names of every namespace. */
  async namespaces(o?: CallOptions): Promise<string[]> {
    const r = await this.call(M.ListNamespaces, {}, undefined, o);
    return r.namespaces.map((n) => n.name ?? '');
  }

  /** Containers of `namespace` that match any of `filters` (containerd filter syntax; none: all). */
  async containers(namespace: string, filters: string[] = [], o?: CallOptions): Promise<ContainerInfo[]> {
    const r = await this.call(M.ListContainers, { filters }, namespace, o);
    return r.containers.map(toContainerInfo);
  }

  /** KYB_ERR_NOT_FOUND when `namespace` has no container `id`. */
  async container(namespace: string, id: string, o?: CallOptions): Promise<ContainerInfo> {
    return toContainerInfo(await this.getContainer(namespace, id, o));
  }

  /** The container's task; undefined when it has none (or there is no such container). */
  async task(namespace: string, id: string, o?: CallOptions): Promise<TaskInfo | undefined> {
    try {
      const r = await this.call(M.GetTask, { containerId: id }, namespace, o);
      return r.process ? toTaskInfo(r.process) : undefined;
    } catch (err) {
      if (KybernateError.is(err) && err.code === 'KYB_ERR_NOT_FOUND') return undefined;
      throw err;
    }
  }

  /**
   * Creates the task of an existing container. containerd mounts nothing itself, so (as containerd's own
   * client does) the container's snapshot mounts are looked up and sent as the task's rootfs. Empty stdio
   * strings mean no IO. A restore's path goes in `options` (the runtime's checkpoint options). One deadline
   * covers the three calls.
   */
  async createTask(namespace: string, req: {
    containerId: string; stdin?: string; stdout?: string; stderr?: string; terminal?: boolean; options?: AnyMessage;
  }, o?: CallOptions): Promise<{ pid: number }> {
    const deadline = this.deadline(o);
    const c = await this.getContainer(namespace, req.containerId, o, deadline);
    const rootfs = c.snapshotKey
      ? (await this.call(M.SnapshotMounts, { snapshotter: c.snapshotter, key: c.snapshotKey }, namespace, o, deadline)).mounts
      : [];
    const r = await this.call(M.CreateTask, {
      containerId: req.containerId, rootfs, stdin: req.stdin, stdout: req.stdout, stderr: req.stderr,
      terminal: req.terminal, options: toAny(req.options),
    }, namespace, o, deadline);
    return { pid: r.pid };
  }

  async startTask(namespace: string, id: string, o?: CallOptions): Promise<{ pid: number }> {
    const r = await this.call(M.StartTask, { containerId: id }, namespace, o);
    return { pid: r.pid };
  }

  /** Signals the init process, or with `all` every process of the container. */
  async killTask(namespace: string, id: string, signal: number, all = false, o?: CallOptions): Promise<void> {
    await this.call(M.KillTask, { containerId: id, signal, all }, namespace, o);
  }

  /** Deletes a stopped task; its init's exit. */
  async deleteTask(namespace: string, id: string, o?: CallOptions): Promise<{ exitStatus: number; exitedAt?: Date; pid: number }> {
    const r = await this.call(M.DeleteTask, { containerId: id }, namespace, o);
    return { exitStatus: r.exitStatus, exitedAt: fromTimestamp(r.exitedAt), pid: r.pid };
  }

  async pauseTask(namespace: string, id: string, o?: CallOptions): Promise<void> {
    await this.call(M.PauseTask, { containerId: id }, namespace, o);
  }

  async resumeTask(namespace: string, id: string, o?: CallOptions): Promise<void> {
    await this.call(M.ResumeTask, { containerId: id }, namespace, o);
  }

  /** Resolves when the init process exits (at once if it has); pass a longer timeoutMs (or Infinity) to wait longer than 30 s. */
  async waitTask(namespace: string, id: string, o?: CallOptions): Promise<{ exitStatus: number; exitedAt?: Date }> {
    const r = await this.call(M.WaitTask, { containerId: id }, namespace, o);
    return { exitStatus: r.exitStatus, exitedAt: fromTimestamp(r.exitedAt) };
  }

  /** Tasks.Checkpoint with the runtime's checkpoint options (e.g. containerd.runc.v1.CheckpointOptions). */
  async checkpointTask(namespace: string, id: string, options: AnyMessage | undefined, o?: CallOptions):
    Promise<{ descriptors: Array<{ mediaType: string; digest: string; size: number }> }> {
    const r = await this.call(M.CheckpointTask, { containerId: id, options: toAny(options) }, namespace, o);
    return { descriptors: r.descriptors.map(toDescriptor) };
  }

  /**
   * Events of every namespace that match any of `filters` (e.g. `topic=="/tasks/exit"`; none: all). The
   * stream has no deadline. onEnd runs exactly once, after the last event: with no error when close() ended
   * it, with a KybernateError otherwise (then subscribe again). containerd answers nothing before the first
   * event, so nothing tells when the subscription is live: list the state after subscribing, not before.
   */
  subscribe(filters: string[], onEvent: (e: EventEnvelope) => void, onEnd: (err?: Error) => void): { close(): void } {
    let sub: Subscription;
    try {
      sub = new Subscription(this.channel, filters, onEvent, onEnd, (s) => this.subscriptions.delete(s));
    } catch (err) {
      queueMicrotask(() => onEnd(err as Error));
      return { close() {} };
    }
    this.subscriptions.add(sub);
    return { close: () => sub.close() };
  }

  /** Idempotent. Ends every subscription (each gets onEnd()); unary calls in flight still finish. */
  close(): void {
    for (const s of [...this.subscriptions]) s.close();
    this.channel.close();
  }

  private async getContainer(namespace: string, id: string, o: CallOptions | undefined, deadline = this.deadline(o)):
    Promise<containerd.services.containers.v1.IContainer> {
    const r = await this.call(M.GetContainer, { id }, namespace, o, deadline);
    if (!r.container) throw new KybernateError('KYB_ERR_NOT_FOUND', `containerd ${M.GetContainer.name}: container ${id}: not found`);
    return r.container;
  }

  private call<Req, Res>(m: Method<Req, Res>, req: Req, namespace: string | undefined, o: CallOptions | undefined,
    deadline = this.deadline(o)): Promise<Res> {
    return this.channel.unary(m, req, { namespace, deadline, signal: o?.signal });
  }

  private deadline(o: CallOptions | undefined): number {
    return Date.now() + (o?.timeoutMs ?? this.timeoutMs);
  }
}
