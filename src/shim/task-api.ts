// Wiring only: the Task service's methods with their wire types, served under both service names
// (containerd 2.x may call v3; the messages are identical).
import { containerd, google } from '../gen/proto';
import { registerService, unary, type ServiceTable, type TtrpcServer } from '../ttrpc';
import type { TaskService } from './service';
import { trace } from './trace';

const T = containerd.task.v2;
const Empty = google.protobuf.Empty;
export const TASK_SERVICES = ['containerd.task.v2.Task', 'containerd.task.v3.Task'];

export function registerTaskService(server: TtrpcServer, s: TaskService): void {
  const table: ServiceTable = {
    State: unary(T.StateRequest, T.StateResponse, (r) => s.state(r)),
    Create: unary(T.CreateTaskRequest, T.CreateTaskResponse, (r) => s.create(r)),
    Start: unary(T.StartRequest, T.StartResponse, (r) => s.start(r)),
    Delete: unary(T.DeleteRequest, T.DeleteResponse, (r) => s.delete(r)),
    Pids: unary(T.PidsRequest, T.PidsResponse, (r) => s.pids(r)),
    Pause: unary(T.PauseRequest, Empty, (r) => s.pause(r)),
    Resume: unary(T.ResumeRequest, Empty, (r) => s.resume(r)),
    Checkpoint: unary(T.CheckpointTaskRequest, Empty, (r) => s.checkpoint(r)),
    Kill: unary(T.KillRequest, Empty, (r) => s.kill(r)),
    Exec: unary(T.ExecProcessRequest, Empty, (r) => s.exec(r)),
    ResizePty: unary(T.ResizePtyRequest, Empty, (r) => s.resizePty(r)),
    CloseIO: unary(T.CloseIORequest, Empty, (r) => s.closeIO(r)),
    Update: unary(T.UpdateTaskRequest, Empty, (r) => s.update(r)),
    Wait: unary(T.WaitRequest, T.WaitResponse, (r) => s.wait(r)),
    Stats: unary(T.StatsRequest, T.StatsResponse, (r) => s.stats(r)),
    Connect: unary(T.ConnectRequest, T.ConnectResponse, (r) => s.connect(r)),
    Shutdown: unary(T.ShutdownRequest, Empty, (r) => s.shutdown(r)),
  };
  registerService(server, TASK_SERVICES, process.env.KYBERNATE_TRACE ? traced(table) : table);
}

/** Each method timed into the benchmark trace (src/shim/trace.ts); only when tracing is on. */
function traced(table: ServiceTable): ServiceTable {
  const out: ServiceTable = {};
  for (const [name, def] of Object.entries(table)) {
    out[name] = {
      ...def,
      handler: async (req, ctx) => {
        const t0 = performance.now();
        try {
          return await def.handler(req, ctx);
        } finally {
          trace('daemon', name, String((req as { id?: string }).id ?? ''), performance.now() - t0);
        }
      },
    };
  }
  return out;
}
