// The methods of containerd's API that ContainerdClient calls, with their codecs
// (proto/containerd/services/*/v1, generated into src/gen/proto).
import { containerd, google } from '../gen/proto';
import { method } from './rpc';

const tasks = containerd.services.tasks.v1;
const containers = containerd.services.containers.v1;
const TASKS = 'containerd.services.tasks.v1.Tasks';
const CONTAINERS = 'containerd.services.containers.v1.Containers';
const Empty = google.protobuf.Empty;

export const Version = method('containerd.services.version.v1.Version', 'Version', Empty,
  containerd.services.version.v1.VersionResponse);
export const ListNamespaces = method('containerd.services.namespaces.v1.Namespaces', 'List',
  containerd.services.namespaces.v1.ListNamespacesRequest, containerd.services.namespaces.v1.ListNamespacesResponse);
export const ListContainers = method(CONTAINERS, 'List', containers.ListContainersRequest, containers.ListContainersResponse);
export const GetContainer = method(CONTAINERS, 'Get', containers.GetContainerRequest, containers.GetContainerResponse);
export const SnapshotMounts = method('containerd.services.snapshots.v1.Snapshots', 'Mounts',
  containerd.services.snapshots.v1.MountsRequest, containerd.services.snapshots.v1.MountsResponse);

export const GetTask = method(TASKS, 'Get', tasks.GetRequest, tasks.GetResponse);
export const CreateTask = method(TASKS, 'Create', tasks.CreateTaskRequest, tasks.CreateTaskResponse);
export const StartTask = method(TASKS, 'Start', tasks.StartRequest, tasks.StartResponse);
export const KillTask = method(TASKS, 'Kill', tasks.KillRequest, Empty);
export const DeleteTask = method(TASKS, 'Delete', tasks.DeleteTaskRequest, tasks.DeleteResponse);
export const PauseTask = method(TASKS, 'Pause', tasks.PauseTaskRequest, Empty);
export const ResumeTask = method(TASKS, 'Resume', tasks.ResumeTaskRequest, Empty);
export const WaitTask = method(TASKS, 'Wait', tasks.WaitRequest, tasks.WaitResponse);
export const CheckpointTask = method(TASKS, 'Checkpoint', tasks.CheckpointTaskRequest, tasks.CheckpointTaskResponse);

export const Subscribe = method('containerd.services.events.v1.Events', 'Subscribe',
  containerd.services.events.v1.SubscribeRequest, containerd.types.Envelope);
