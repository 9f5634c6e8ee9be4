// What an agent killed in the middle of an operation leaves, put right when the next one starts, so that
// every workload is running, suspended or checkpointed — never half-way:
// - a checkpoint: the shim carries it out whatever happens to the agent (the snapshot is complete, or its
//   directory is aborted and marked); a task it ended is left stopped, which the view already shows as
//   CHECKPOINTED beside its snapshot, and a restore deletes it first. The snapshot directory's leftovers
//   are SnapshotDirectory.removeOrphans()'s.
// - a restore cut between Tasks.Create and Tasks.Start: a task created from a snapshot and never started
//   (the kybernate shim reports pid 0 for it, where `runc create` would have given a pid). Nothing of it
//   ran: the task is deleted, and the workload is CHECKPOINTED again, ready for the next restore.
// - a restore cut during Tasks.Start: containerd and the shim finish it; the workload is RUNNING.
import type { Logger } from 'pino';
import type { ContainerdClient } from '../containerd/client';

export const KYBERNATE_RUNTIME = 'io.containerd.kybernate.v2';

/** Deletes the tasks of restores that were created and never started; returns `namespace/id` of each. */
export async function deleteUnstartedRestores(containerd: ContainerdClient, log: Pick<Logger, 'info' | 'warn'>): Promise<string[]> {
  const done: string[] = [];
  for (const ns of await containerd.namespaces()) {
    for (const c of await containerd.containers(ns, [`runtime.name==${KYBERNATE_RUNTIME}`])) {
      const t = await containerd.task(ns, c.id);
      if (!t || t.status !== 'created' || t.pid !== 0) continue;
      try {
        await containerd.deleteTask(ns, c.id);
        done.push(`${ns}/${c.id}`);
      } catch (err) {
        log.warn({ namespace: ns, id: c.id, err: (err as Error).message }, 'cannot delete the task of a restore that never started');
      }
    }
  }
  if (done.length > 0) log.info({ workloads: done }, 'deleted the tasks of restores a killed agent created and never started');
  return done;
}
