// Checkpoint and restore of a workload through the agent, without containerd's content store: the
// snapshot is written into the agent's snapshot directory by the shim itself and read back from there.
//
// - Checkpoint: containerd 2.x hands a runtime the checkpoint options' image_path and imports nothing;
//   1.x passes image_path only to runtimes named io.containerd.runc.* and would tar the images into its
//   content store, so there the agent calls the shim's own Task.Checkpoint (what containerd would send,
//   with the agent's directory as the path). With `exit`, the task ends once the snapshot is complete
//   and durable (the shim's promise), and the agent deletes the stopped task: the container and its rw
//   layer stay, with no task — CHECKPOINTED.
// - Restore: Tasks.Create of the same container with runc options {criu_image_path: the snapshot}
//   (containerd 2.x turns it into the shim's checkpoint path, 1.x passes the options on), then Start.
//
// Invariants:
// - A failed checkpoint leaves no snapshot in the index (the shim aborts its writer; the agent removes
//   the directory it allocated) and the task as the shim left it: running (or paused), never half-way.
// - A restore starts only from a snapshot of the same namespace/container that is complete and
//   compatible with this node (checked here before containerd is asked; the shim then verifies every byte
//   before anything restored runs). A failed restore leaves no task behind.
import * as fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import { KybernateError, errPrecondition } from '../errors';
import { containerd as pb } from '../gen/proto';
import { validateId } from '../ids';
import type { ContainerdClient, TaskInfo } from '../containerd/client';
import { ShimClient } from '../shim-client/client';
import { nodeFacts } from '../host/facts';
import { asKybernateError } from './failure';
import type { SnapshotDirectory, SnapshotInfo } from './snapshots';

export interface CheckpointContext {
  containerd: ContainerdClient;
  /** containerd's state directory: where containerd 1.x's shims are found. */
  containerdState: string;
  snapshots: SnapshotDirectory;
}

export interface SnapshotOpResult {
  steps: Array<{ name: string; durationMs: number; bytes?: number }>;
  durationMs: number;
  snapshot: SnapshotInfo;
  cudaPids: number[];
}

/** The whole operation may take as long as CRIU does; the caller's signal cancels the wait. */
const OPERATION_TIMEOUT_MS = 30 * 60_000;
const CHECKPOINT_OPTIONS = 'containerd.runc.v1.CheckpointOptions';
const RUNC_OPTIONS = 'containerd.runc.v1.Options';
const Empty = { decode: (): Record<string, never> => ({}) };

/** containerd's major version, asked once per client. */
const majors = new WeakMap<ContainerdClient, Promise<number>>();
function majorOf(c: ContainerdClient): Promise<number> {
  let p = majors.get(c);
  if (!p) {
    p = c.version().then((v) => Number.parseInt(v.version.replace(/^v/, ''), 10) || 0);
    p.catch(() => majors.delete(c));
    majors.set(c, p);
  }
  return p;
}

/** A failure as a KybernateError (failure.ts's classification, by code), named after the operation. */
function asKybernate(err: unknown, what: string): KybernateError {
  if (KybernateError.is(err)) return err;
  const e = asKybernateError(err);
  return new KybernateError(e.code, `${what}: ${e.message}`, { cause: err });
}

/** The task's log URIs, kept beside the snapshot so that a restored task writes where the original did. */
interface SavedIO { stdout: string; stderr: string }
const ioFile = (dir: string): string => `${dir}.io.json`; // SnapshotDirectory's sidecar: removed with the snapshot

function savedIO(task: TaskInfo): SavedIO {
  // FIFOs belong to the client that made them (gone after a scale to zero); URIs (file://, binary://) last.
  const uri = (s: string) => (s.includes('://') ? s : '');
  return { stdout: uri(task.stdout), stderr: uri(task.stderr) };
}

async function checkpointThroughShim(ctx: CheckpointContext, namespace: string, id: string, dir: string, options: Uint8Array,
  signal?: AbortSignal): Promise<void> {
  const shim = await ShimClient.connect(ctx.containerdState, namespace, id);
  const abort = () => shim.close();
  signal?.addEventListener('abort', abort, { once: true });
  try {
    await shim.request('containerd.task.v2.Task', 'Checkpoint', pb.task.v2.CheckpointTaskRequest, Empty,
      { id, path: dir, options: { type_url: CHECKPOINT_OPTIONS, value: options } }, { timeoutMs: OPERATION_TIMEOUT_MS });
  } catch (err) {
    if (signal?.aborted) throw new KybernateError('KYB_ERR_CANCELLED', `checkpoint of ${namespace}/${id} cancelled`, { cause: err });
    throw asKybernate(err, `checkpoint of ${namespace}/${id}`);
  } finally {
    signal?.removeEventListener('abort', abort);
    shim.close();
  }
}

export async function checkpointWorkload(ctx: CheckpointContext, req: { namespace: string; id: string; exit: boolean; signal?: AbortSignal }):
  Promise<SnapshotOpResult> {
  const { namespace, id, exit, signal } = req;
  validateId('namespace', namespace);
  validateId('container id', id);
  const t0 = performance.now();
  const call = { signal };
  const task = await ctx.containerd.task(namespace, id, call);
  if (!task || (task.status !== 'running' && task.status !== 'paused')) {
    throw errPrecondition(`cannot checkpoint ${namespace}/${id}: ${task ? `its task is ${task.status}` : 'it has no task'}`);
  }
  const dir = await ctx.snapshots.allocate(namespace, id);
  const steps: SnapshotOpResult['steps'] = [];
  try {
    await fs.promises.writeFile(ioFile(dir), `${JSON.stringify(savedIO(task))}\n`, { mode: 0o600 });
    const options = pb.runc.v1.CheckpointOptions.encode({ exit, imagePath: dir }).finish();
    const tDump = performance.now();
    if ((await majorOf(ctx.containerd)) >= 2) {
      await ctx.containerd.checkpointTask(namespace, id, { typeUrl: CHECKPOINT_OPTIONS, value: options }, { signal, timeoutMs: OPERATION_TIMEOUT_MS });
    } else {
      await checkpointThroughShim(ctx, namespace, id, dir, options, signal);
    }
    steps.push({ name: 'checkpoint', durationMs: performance.now() - tDump });
  } catch (err) {
    await ctx.snapshots.release(dir).catch(() => undefined);
    await fs.promises.rm(ioFile(dir), { force: true });
    throw err;
  }
  const snapshot = await ctx.snapshots.at(namespace, id, dir);
  if (exit) {
    // The shim reported the exit before it answered; Delete then removes the stopped task and keeps the container.
    const tDelete = performance.now();
    await ctx.containerd.waitTask(namespace, id, { signal, timeoutMs: 60_000 });
    await ctx.containerd.deleteTask(namespace, id, call);
    steps.push({ name: 'delete-task', durationMs: performance.now() - tDelete });
  }
  return { steps, durationMs: performance.now() - t0, snapshot, cudaPids: snapshot.cudaPids };
}

export async function restoreWorkload(ctx: CheckpointContext, req: { namespace: string; id: string; snapshot?: string; signal?: AbortSignal }):
  Promise<SnapshotOpResult> {
  const { namespace, id, signal } = req;
  validateId('namespace', namespace);
  validateId('container id', id);
  const t0 = performance.now();
  const steps: SnapshotOpResult['steps'] = [];
  const call = { signal };
  await ctx.containerd.container(namespace, id, call);
  const task = await ctx.containerd.task(namespace, id, call);
  // A created task with pid 0 is a restore cut before its Start (recover.ts): nothing of it ran.
  const unstarted = task?.status === 'created' && task.pid === 0;
  if (task && task.status !== 'stopped' && !unstarted) throw errPrecondition(`cannot restore ${namespace}/${id}: its task is ${task.status}`);
  const snapshot = req.snapshot
    ? await ctx.snapshots.find(req.snapshot, { namespace, id })
    : await ctx.snapshots.newest(namespace, id);
  if (!snapshot) throw new KybernateError('KYB_ERR_NOT_FOUND', `${namespace}/${id} has no snapshot to restore: checkpoint it first`);
  // A stopped task is what is left of the workload's last run: the restored one takes its place.
  if (task) await ctx.containerd.deleteTask(namespace, id, call);

  // Incomplete or incompatible snapshots are refused here, before containerd creates anything.
  const tCheck = performance.now();
  const facts = await nodeFacts('runc', snapshot.cudaPids.length > 0);
  await ctx.snapshots.store.open(snapshot.path, {
    ...(facts.criu ? { criuVersion: facts.criu } : {}), ...(facts.driver ? { driverVersion: facts.driver } : {}),
    ...(snapshot.cudaPids.length > 0 ? { gpus: facts.gpus.map((g) => ({ uuid: g.uuid, name: g.name, memoryBytes: g.memoryBytes })) } : {}),
  });
  steps.push({ name: 'check', durationMs: performance.now() - tCheck });

  let io: SavedIO = { stdout: '', stderr: '' };
  try {
    io = JSON.parse(await fs.promises.readFile(ioFile(snapshot.path), 'utf8')) as SavedIO;
  } catch {
    // Snapshots written by others (ctr --image-path) have no saved IO: the restored task gets none.
  }
  const options = { typeUrl: RUNC_OPTIONS, value: pb.runc.v1.Options.encode({ criuImagePath: snapshot.path }).finish() };
  const tCreate = performance.now();
  await ctx.containerd.createTask(namespace, { containerId: id, stdout: io.stdout, stderr: io.stderr, options },
    { signal, timeoutMs: OPERATION_TIMEOUT_MS });
  steps.push({ name: 'create', durationMs: performance.now() - tCreate });
  const tStart = performance.now();
  try {
    await ctx.containerd.startTask(namespace, id, { signal, timeoutMs: OPERATION_TIMEOUT_MS });
  } catch (err) {
    // A restore that failed in runc left no process: remove the task so the container can be restored again.
    await ctx.containerd.deleteTask(namespace, id).catch(() => undefined);
    throw err;
  }
  steps.push({ name: 'start', durationMs: performance.now() - tStart });
  return { steps, durationMs: performance.now() - t0, snapshot, cudaPids: snapshot.cudaPids };
}
