// The GPU container suite's containerd calls over gRPC: containers (a message set small enough to declare
// here, so the GPU machine needs no ctr) and tasks (the generated codecs the e2e client uses).
import * as protobuf from 'protobufjs';
import { containerd } from '../../src/gen/proto';
import { ContainerdClient } from '../e2e/support/grpc';

const CONTAINERS_PROTO = `
syntax = "proto3";
package containerd.services.containers.v1;
message Any { string type_url = 1; bytes value = 2; }
message Runtime { string name = 1; Any options = 2; }
message Container {
  string id = 1;
  map<string, string> labels = 2;
  string image = 3;
  Runtime runtime = 4;
  Any spec = 5;
  string snapshotter = 6;
  string snapshot_key = 7;
}
message CreateContainerRequest { Container container = 1; }
message CreateContainerResponse { Container container = 1; }
message DeleteContainerRequest { string id = 1; }
message Empty {}
`;

const root = protobuf.parse(CONTAINERS_PROTO, { keepCase: true }).root;
const CreateContainerRequest = root.lookupType('containerd.services.containers.v1.CreateContainerRequest');
const CreateContainerResponse = root.lookupType('containerd.services.containers.v1.CreateContainerResponse');
const DeleteContainerRequest = root.lookupType('containerd.services.containers.v1.DeleteContainerRequest');
const tasks = containerd.services.tasks.v1;
const Empty = { decode: (): Record<string, never> => ({}) };
const SPEC_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/Spec';

const plain = (t: protobuf.Type) => ({
  encode: (m: Record<string, unknown>) => t.encode(t.fromObject(m)),
  decode: (b: Uint8Array) => t.toObject(t.decode(b)),
});

export type TaskStatus = 'UNKNOWN' | 'CREATED' | 'RUNNING' | 'STOPPED' | 'PAUSED' | 'PAUSING';
const STATUS_NAMES: TaskStatus[] = ['UNKNOWN', 'CREATED', 'RUNNING', 'STOPPED', 'PAUSED', 'PAUSING'];

function any(typeUrl: string, bytes: Uint8Array): { type_url: string; value: Uint8Array } {
  return { type_url: typeUrl, value: bytes };
}

export class Ctd {
  private readonly c: ContainerdClient;

  constructor(address: string, readonly namespace: string) {
    this.c = new ContainerdClient(address, namespace);
  }

  close(): void {
    this.c.close();
  }

  async createContainer(id: string, runtime: string, spec: unknown): Promise<void> {
    await this.c.unary('/containerd.services.containers.v1.Containers/Create', plain(CreateContainerRequest),
      plain(CreateContainerResponse), {
        container: { id, runtime: { name: runtime }, spec: any(SPEC_TYPE_URL, Buffer.from(JSON.stringify(spec))) },
      });
  }

  async deleteContainer(id: string): Promise<void> {
    await this.c.unary('/containerd.services.containers.v1.Containers/Delete', plain(DeleteContainerRequest), Empty, { id });
  }

  /** Tasks.Create; `restoreFrom` sets containerd.runc.v1.Options.criu_image_path (containerd 2.x passes it to any shim). */
  async createTask(id: string, stdout: string, stderr: string, restoreFrom?: string): Promise<number> {
    const req: containerd.services.tasks.v1.ICreateTaskRequest = { containerId: id, stdin: '', stdout, stderr };
    if (restoreFrom) {
      req.options = any('containerd.runc.v1.Options',
        containerd.runc.v1.Options.encode({ criuImagePath: restoreFrom }).finish());
    }
    const res = await this.c.unary('/containerd.services.tasks.v1.Tasks/Create', tasks.CreateTaskRequest,
      tasks.CreateTaskResponse, req);
    return res.pid;
  }

  async start(id: string): Promise<number> {
    const res = await this.c.unary('/containerd.services.tasks.v1.Tasks/Start', tasks.StartRequest, tasks.StartResponse,
      { containerId: id });
    return res.pid;
  }

  /** Tasks.Checkpoint with CheckpointOptions{image_path, exit}: containerd 2.x hands the path to the shim as is. */
  async checkpoint(id: string, imagePath: string, exit: boolean): Promise<void> {
    await this.c.unary('/containerd.services.tasks.v1.Tasks/Checkpoint', tasks.CheckpointTaskRequest,
      tasks.CheckpointTaskResponse, {
        containerId: id,
        options: any('containerd.runc.v1.CheckpointOptions',
          containerd.runc.v1.CheckpointOptions.encode({ imagePath, exit }).finish()),
      });
  }

  async status(id: string): Promise<{ status: TaskStatus; pid: number }> {
    const res = await this.c.unary('/containerd.services.tasks.v1.Tasks/Get', tasks.GetRequest, tasks.GetResponse,
      { containerId: id });
    return { status: STATUS_NAMES[res.process?.status ?? 0] ?? 'UNKNOWN', pid: res.process?.pid ?? 0 };
  }

  async kill(id: string, signal: number): Promise<void> {
    await this.c.unary('/containerd.services.tasks.v1.Tasks/Kill', tasks.KillRequest, Empty,
      { containerId: id, signal, all: true });
  }

  async deleteTask(id: string): Promise<void> {
    await this.c.unary('/containerd.services.tasks.v1.Tasks/Delete', tasks.DeleteTaskRequest, tasks.DeleteResponse,
      { containerId: id });
  }

  /** Polls Tasks.Get until the task is STOPPED (an exit after checkpoint is reaped asynchronously). */
  async waitStopped(id: string, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = await this.status(id);
      if (s.status === 'STOPPED') return;
      if (Date.now() > deadline) throw new Error(`task ${id} still ${s.status} after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
