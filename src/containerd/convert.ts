// containerd's decoded messages → the plain objects of types.ts. Absent fields become '' / 0 / undefined
// as proto3 defines them; Go's zero time (containerd's "never") becomes undefined.
import Long from 'long';
import { containerd, type google } from '../gen/proto';
import { fromTimestamp } from '../timestamp';
import type { AnyMessage, ContainerInfo, EventEnvelope, TaskInfo, TaskStatus } from './types';

const S = containerd.v1.types.Status;
const TASK_STATUS: Record<containerd.v1.types.Status, TaskStatus> = {
  [S.UNKNOWN]: 'unknown',
  [S.CREATED]: 'created',
  [S.RUNNING]: 'running',
  [S.STOPPED]: 'stopped',
  [S.PAUSED]: 'paused',
  [S.PAUSING]: 'pausing',
};

export function fromAny(a: google.protobuf.IAny | null | undefined): AnyMessage | undefined {
  if (!a) return undefined;
  return { typeUrl: a.type_url ?? '', value: a.value ?? new Uint8Array() };
}

export function toAny(a: AnyMessage | undefined): google.protobuf.IAny | undefined {
  return a && { type_url: a.typeUrl, value: a.value };
}

export function toContainerInfo(c: containerd.services.containers.v1.IContainer): ContainerInfo {
  return {
    id: c.id ?? '',
    runtime: c.runtime?.name ?? '',
    runtimeOptions: fromAny(c.runtime?.options),
    image: c.image ?? '',
    labels: { ...c.labels },
    spec: fromAny(c.spec),
    snapshotter: c.snapshotter ?? '',
    snapshotKey: c.snapshotKey ?? '',
    createdAt: fromTimestamp(c.createdAt),
    updatedAt: fromTimestamp(c.updatedAt),
  };
}

export function toTaskInfo(p: containerd.v1.types.IProcess): TaskInfo {
  return {
    // Tasks.Get fills `id` (a task's id is its container's) and leaves container_id empty.
    id: p.containerId || p.id || '',
    pid: p.pid ?? 0,
    // A status newer than this file knows is reported as 'unknown' rather than guessed.
    status: TASK_STATUS[p.status ?? S.UNKNOWN] ?? 'unknown',
    exitStatus: p.exitStatus ?? 0,
    exitedAt: fromTimestamp(p.exitedAt),
    stdin: p.stdin ?? '',
    stdout: p.stdout ?? '',
    stderr: p.stderr ?? '',
    terminal: p.terminal ?? false,
  };
}

export function toEnvelope(e: containerd.types.IEnvelope): EventEnvelope {
  return {
    namespace: e.namespace ?? '',
    topic: e.topic ?? '',
    timestamp: fromTimestamp(e.timestamp),
    event: fromAny(e.event),
  };
}

export function toDescriptor(d: containerd.types.IDescriptor): { mediaType: string; digest: string; size: number } {
  return { mediaType: d.mediaType ?? '', digest: d.digest ?? '', size: Long.fromValue(d.size ?? 0).toNumber() };
}
