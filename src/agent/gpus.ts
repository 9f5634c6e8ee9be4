// The node's GPUs and the device memory workloads hold on them. Memory per process comes from nvidia-smi
// (the CUDA driver API does not report other processes' use); a process is matched to its container by
// its cgroup (proc.ts), so only the processes that hold GPU memory are looked at, however many run.
import { cudaGpus } from '../host/facts';
import { run } from '../native/run';
import { cgroupOf } from './proc';

const SMI_TIMEOUT_MS = 5_000;
/** One nvidia-smi answer serves every view computed within this long (a List looks at many workloads). */
const REUSE_MS = 1_000;
const MIB = 1024 * 1024;

/** nvidia-smi's CSV lines; undefined when it is not installed or fails (no driver). */
async function smi(query: string): Promise<string[] | undefined> {
  try {
    const r = await run('nvidia-smi', [query, '--format=csv,noheader,nounits'], { timeoutMs: SMI_TIMEOUT_MS });
    if (r.status !== 0) return undefined;
    return r.stdout.toString().split('\n').map((l) => l.trim()).filter(Boolean);
  } catch {
    return undefined;
  }
}

/** Device memory in use per cgroup (the text of /proc/<pid>/cgroup of the processes that hold it). */
export class GpuMemory {
  private last: { at: number; value: Promise<Map<string, number>> } | undefined;

  /** `fresh`: ask nvidia-smi now, not reuse an answer (an operation measuring what it frees). */
  byCgroup(fresh = false): Promise<Map<string, number>> {
    const now = Date.now();
    if (!fresh && this.last && now - this.last.at < REUSE_MS) return this.last.value;
    const value = this.read();
    this.last = { at: now, value };
    return value;
  }

  /** What the processes in the cgroup of `pid` hold on the GPUs (0 when none, or no nvidia-smi). */
  async ofContainer(pid: number, fresh = false): Promise<number> {
    const cgroup = cgroupOf(pid);
    if (cgroup === undefined) return 0;
    return (await this.byCgroup(fresh)).get(cgroup) ?? 0;
  }

  private async read(): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for (const line of (await smi('--query-compute-apps=pid,used_memory')) ?? []) {
      const [pid, used] = line.split(',').map((s) => Number.parseInt(s.trim(), 10));
      if (pid === undefined || used === undefined || !Number.isFinite(pid) || !Number.isFinite(used)) continue;
      const cgroup = cgroupOf(pid);
      if (cgroup !== undefined) out.set(cgroup, (out.get(cgroup) ?? 0) + used * MIB);
    }
    return out;
  }
}

export interface GpuDevice { uuid: string; name: string; memoryTotalBytes: number; memoryUsedBytes: number }

/** The CUDA driver's GPUs with nvidia-smi's memory use; without them, `unavailable` says why. */
export async function gpuInventory(): Promise<{ gpus: GpuDevice[]; unavailable: string }> {
  let gpus;
  try {
    gpus = await cudaGpus();
  } catch (err) {
    return { gpus: [], unavailable: (err as Error).message };
  }
  if (gpus.length === 0) return { gpus: [], unavailable: 'the CUDA driver lists no GPUs' };
  const used = new Map<string, number>();
  for (const line of (await smi('--query-gpu=uuid,memory.used')) ?? []) {
    const [uuid, mib] = line.split(',').map((s) => s.trim());
    if (uuid && mib !== undefined && Number.isFinite(Number(mib))) used.set(uuid, Number(mib) * MIB);
  }
  return {
    gpus: gpus.map((g) => ({ uuid: g.uuid, name: g.name, memoryTotalBytes: g.memoryBytes, memoryUsedBytes: used.get(g.uuid) ?? 0 })),
    unavailable: '',
  };
}
