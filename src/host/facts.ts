// Facts about this node that a snapshot manifest records, a restore checks and `kybernate doctor` shows:
// tool versions (versions.ts), the kernel (kernel.ts), the GPU driver and GPUs, pids as a container sees
// them. src/host is the one place these are probed; the shim, the CLI and the agent ask it.
//
// Commands run through native/run, never child_process: in the shim the one native reaper collects every
// child with waitid, so child_process would never see its children exit (and a child_process child would
// be reaped behind libuv's back); native/run spawns through the reaper there and falls back to
// child_process only in a one-shot CLI, where nothing else reaps.
import * as fs from 'node:fs';
import { kernelRelease } from './kernel';
import { nodeVersions } from './versions';
import { run } from '../native/run';
import { VERSION } from '../version';

export interface GpuFact { uuid: string; name: string; memoryBytes: number; index: number }

export interface NodeFacts {
  kernel: string;
  shim: string;
  criu?: string;
  runc?: string;
  /** NVIDIA kernel driver version, e.g. "580.159.04" (from /proc/driver/nvidia/version). */
  driver?: string;
  gpus: GpuFact[];
}

const NVIDIA_SMI_TIMEOUT_MS = 5_000;

/** The driver version without loading libcuda: the kernel module reports it. */
export function nvidiaDriverVersion(): string | undefined {
  try {
    return /Kernel Module\s+(?:for\s+\S+\s+)?([0-9]+(?:\.[0-9]+)+)/.exec(fs.readFileSync('/proc/driver/nvidia/version', 'utf8'))?.[1];
  } catch {
    return undefined;
  }
}

/**
 * GPUs as the kernel driver lists them (/proc/driver/nvidia/gpus/<bus>/information): names and UUIDs
 * without loading libcuda, whose cuInit costs hundreds of milliseconds. memoryBytes is not there (0).
 */
export function procGpus(): GpuFact[] {
  const base = '/proc/driver/nvidia/gpus';
  let buses: string[];
  try {
    buses = fs.readdirSync(base);
  } catch {
    return [];
  }
  const out: GpuFact[] = [];
  for (const bus of buses) {
    try {
      const info = fs.readFileSync(`${base}/${bus}/information`, 'utf8');
      const field = (name: string) => new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(info)?.[1]?.trim();
      const name = field('Model');
      const uuid = field('GPU UUID');
      const minor = Number(field('Device Minor'));
      if (name && uuid) out.push({ name, uuid, memoryBytes: 0, index: Number.isFinite(minor) ? minor : out.length });
    } catch {
      // a GPU that vanished between readdir and read
    }
  }
  return out.sort((a, b) => a.index - b.index);
}

interface ToolCache { key: string; settled: boolean; versions: Promise<{ criu?: string; runc?: string }> }
let toolCache: ToolCache | undefined;

/** Where a command name resolves on PATH (or itself, when it is a path). */
function resolveOnPath(name: string): string | undefined {
  if (name.includes('/')) return name;
  for (const dir of (process.env.PATH ?? '').split(':')) {
    const p = `${dir || '.'}/${name}`;
    if (fs.statSync(p, { throwIfNoEntry: false })?.isFile()) return p;
  }
  return undefined;
}

/** Which criu and runc binaries a probe would run, down to their inode and mtime: a new binary is a new key. */
function toolKey(runcBinary: string): string {
  return ['criu', runcBinary].map((name) => {
    const p = resolveOnPath(name);
    const st = p === undefined ? undefined : fs.statSync(p, { throwIfNoEntry: false });
    return `${p}:${st?.ino}:${st?.mtimeMs}`;
  }).join('|');
}

function toolVersions(runcBinary: string): Promise<{ criu?: string; runc?: string }> {
  const key = toolKey(runcBinary);
  if (!toolCache || toolCache.key !== key) {
    const entry: ToolCache = { key, settled: false, versions: nodeVersions(undefined, runcBinary).then(({ criu, runc }) => ({ criu, runc })) };
    entry.versions.then(() => { entry.settled = true; }, () => { toolCache = undefined; });
    toolCache = entry;
  }
  return toolCache.versions;
}

/** Probes criu's and runc's versions ahead of the first restore (a warm spare does, while idle). */
export function warmToolVersions(runcBinary = 'runc'): void {
  toolVersions(runcBinary).catch(() => undefined);
}

/**
 * Forgets a probe still running: one started before the native reaper was (a spare being claimed) would
 * never see its child's exit once the reaper collects every child.
 */
export function dropUnsettledToolVersions(): void {
  if (toolCache && !toolCache.settled) toolCache = undefined;
}

/**
 * Versions are cached per shim process, keyed by the binaries' paths, inodes and mtimes (an upgrade under a
 * long-idle spare is seen). GPUs come from the CUDA driver (with memory sizes) when `withGpus` is 'cuda',
 * from the kernel driver when 'proc'.
 */
export async function nodeFacts(runcBinary: string, withGpus: boolean | 'proc'): Promise<NodeFacts> {
  const tools = await toolVersions(runcBinary);
  const facts: NodeFacts = { kernel: kernelRelease(), shim: VERSION, ...tools, gpus: [] };
  const driver = nvidiaDriverVersion();
  if (driver) facts.driver = driver;
  if (withGpus === 'proc') {
    facts.gpus = procGpus();
  } else if (withGpus) {
    facts.gpus = await cudaGpus();
  }
  return facts;
}

/**
 * The GPUs a container can use: those whose /dev/nvidiaN device node its spec lists (N is the GPU's
 * minor number, which the driver numbers like CUDA's default device order). A spec without GPU device
 * nodes (privileged, or devices from the host) gets every GPU.
 */
export function gpusOfSpec(spec: Record<string, unknown>, gpus: GpuFact[]): Array<{ uuid: string; name: string; memoryBytes: number }> {
  const devices = ((spec.linux as { devices?: Array<{ path?: string }> } | undefined)?.devices) ?? [];
  const minors = new Set(devices.map((d) => /^\/dev\/nvidia([0-9]+)$/.exec(d.path ?? '')?.[1]).filter((m): m is string => m !== undefined).map(Number));
  const chosen = minors.size > 0 ? gpus.filter((g) => minors.has(g.index)) : gpus;
  return chosen.map((g) => ({ uuid: g.uuid, name: g.name, memoryBytes: g.memoryBytes }));
}

/** The pid as the process's own (innermost) pid namespace numbers it: what CRIU restores it as. */
export function nsPidOf(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const line = /^NSpid:\s*(.*)$/m.exec(status)?.[1];
  const ids = line?.trim().split(/\s+/).map(Number) ?? [pid];
  return ids[ids.length - 1] ?? pid;
}

/** Device memory used by pids, from nvidia-smi (0 when it is not there: the manifest then says unknown). */
export async function gpuMemoryOf(pids: number[]): Promise<number> {
  try {
    const r = await run('nvidia-smi', ['--query-compute-apps=pid,used_memory', '--format=csv,noheader,nounits'], { timeoutMs: NVIDIA_SMI_TIMEOUT_MS });
    if (r.status !== 0) return 0;
    const want = new Set(pids);
    let mib = 0;
    for (const line of r.stdout.toString().split('\n')) {
      const [pid, used] = line.split(',').map((s) => Number.parseInt(s.trim(), 10));
      if (pid !== undefined && want.has(pid) && used !== undefined && Number.isFinite(used)) mib += used;
    }
    return mib * 1024 * 1024;
  } catch {
    return 0;
  }
}

/**
 * The CUDA restore needs cuInit in the calling process (200-260 ms on an H100, seen in the GPU suite),
 * and only device queries run it: a GPU list now moves it off the restore's critical path, overlapping
 * the checksum verification and `runc restore`. A failure shows up again, with its error, at restore.
 */
export function warmCuda(): void {
  void cudaGpus().catch(() => undefined);
}

let gpuList: Promise<GpuFact[]> | undefined;

/** The CUDA driver's GPUs with their memory sizes, asked once per process (a failed answer is not kept). */
export function cudaGpus(): Promise<GpuFact[]> {
  if (!gpuList) {
    gpuList = import('../native')
      .then(({ cuda }) => cuda.listGpus())
      .then((gpus) => gpus.map((g) => ({ uuid: g.uuid, name: g.name, memoryBytes: g.memoryBytes, index: g.index })));
    gpuList.catch(() => { gpuList = undefined; });
  }
  return gpuList;
}

/** The CUDA driver API version (12080 for 12.8); rejects with KYB_ERR_CUDA_NO_DRIVER without libcuda. */
export async function cudaDriverVersion(): Promise<number> {
  const { cuda } = await import('../native');
  return cuda.cudaDriverVersion();
}
