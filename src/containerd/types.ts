// What ContainerdClient returns: containerd's messages as plain objects (camelCase fields, Dates, numbers),
// free of protobufjs types, so that callers never import src/gen for them.

/** A google.protobuf.Any: containerd's type URL (e.g. "containerd.runc.v1.Options") and the encoded message. */
export interface AnyMessage { typeUrl: string; value: Uint8Array }

/** A container record (Containers.Get / List). */
export interface ContainerInfo {
  id: string;
  /** The runtime's name, e.g. io.containerd.kybernate.v2. */
  runtime: string;
  /** The options a task gets when it is created without options of its own. */
  runtimeOptions?: AnyMessage;
  image: string;
  labels: Record<string, string>;
  /** The OCI runtime spec (JSON, type URL types.containerd.io/opencontainers/runtime-spec/1/Spec). */
  spec?: AnyMessage;
  snapshotter: string;
  snapshotKey: string;
  createdAt?: Date;
  updatedAt?: Date;
}

/** containerd.v1.types.Status, lower-cased. */
export type TaskStatus = 'unknown' | 'created' | 'running' | 'stopped' | 'paused' | 'pausing';

/** A container's task, i.e. its init process (Tasks.Get). */
export interface TaskInfo {
  /** The container id. */
  id: string;
  pid: number;
  status: TaskStatus;
  /** Meaningful once status is 'stopped'. */
  exitStatus: number;
  /** Undefined until the process has exited. */
  exitedAt?: Date;
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

/** One event from Events.Subscribe; decode `event.value` by `event.typeUrl` (e.g. "containerd.events.TaskExit"). */
export interface EventEnvelope { namespace: string; topic: string; timestamp?: Date; event?: AnyMessage }

/** Per-call options of every unary method. */
export interface CallOptions {
  /** The call's deadline from now; default the client's (30 s). Infinity: no deadline. */
  timeoutMs?: number;
  /** Aborting cancels the call, which then rejects with KYB_ERR_CANCELLED. */
  signal?: AbortSignal;
}
