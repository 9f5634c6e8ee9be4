// Container cgroup metrics (for Task.Stats) and OOM notifications (for /tasks/oom).
//
// The metrics type follows the host: a unified-only host reports io.containerd.cgroups.v2.Metrics,
// a v1 or hybrid host io.containerd.cgroups.v1.Metrics, as containerd's runc shim does. The
// returned typeUrl is the bare full name, the form containerd's typeurl registry resolves.
import { io } from '../../gen/proto';
import { cgroupMode, processCgroups, readMounts } from './hierarchy';
import { isGone } from './files';
import { collectV1 } from './v1';
import { collectV2 } from './v2';
import { errNotFound } from '../../errors';

export { cgroupMode } from './hierarchy';
export type { CgroupMode } from './hierarchy';
export { watchOom } from './oom';
export type { OomDelivery, OomWatch, WatchOomOptions } from './oom';

export const V1_METRICS_TYPE = 'io.containerd.cgroups.v1.Metrics';
export const V2_METRICS_TYPE = 'io.containerd.cgroups.v2.Metrics';

export async function collectMetrics(pid: number): Promise<{ typeUrl: string; value: Uint8Array }> {
  const mounts = readMounts();
  const mode = cgroupMode(mounts);
  let cgroups;
  try {
    cgroups = processCgroups(pid, mounts);
  } catch (err) {
    if (isGone(err)) throw errNotFound(`cgroup of process ${pid}`);
    throw err;
  }
  if (mode === 'v2') {
    if (cgroups.unified === undefined) {
      throw errNotFound(`unified cgroup of process ${pid}`);
    }
    const m = await collectV2(cgroups.unified);
    return { typeUrl: V2_METRICS_TYPE, value: io.containerd.cgroups.v2.Metrics.encode(m).finish() };
  }
  const m = await collectV1(cgroups.v1);
  return { typeUrl: V1_METRICS_TYPE, value: io.containerd.cgroups.v1.Metrics.encode(m).finish() };
}
