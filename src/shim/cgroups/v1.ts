// io.containerd.cgroups.v1.Metrics from the per-controller hierarchies of a cgroup v1 (or
// hybrid) host. Field meanings follow containerd's own v1 collector so that `ctr task metrics`
// and CRI show the same numbers as with runc.
import Long from 'long';
import { io } from '../../gen/proto';
import {
  blockDeviceName,
  hugePageSizes,
  readFlatKeyed,
  readText,
  readU64,
} from './files';

type V1 = typeof io.containerd.cgroups.v1;
type IMetrics = io.containerd.cgroups.v1.IMetrics;
type IMemoryStat = io.containerd.cgroups.v1.IMemoryStat;
type IMemoryEntry = io.containerd.cgroups.v1.IMemoryEntry;
type IBlkIOEntry = io.containerd.cgroups.v1.IBlkIOEntry;
type IBlkIOStat = io.containerd.cgroups.v1.IBlkIOStat;

const NS_PER_USER_HZ = 10_000_000; // USER_HZ is 100 on every Linux ABI Node runs on.

async function pids(dir: string): Promise<io.containerd.cgroups.v1.IPidsStat | undefined> {
  const current = await readU64(dir, 'pids.current');
  if (current === undefined) return undefined;
  // v1 reports an unlimited pids.max ("max") as 0.
  const limit = (await readU64(dir, 'pids.max', Long.UZERO)) ?? Long.UZERO;
  return { current, limit };
}

async function cpu(cpuacctDir: string | undefined, cpuDir: string | undefined): Promise<io.containerd.cgroups.v1.ICPUStat | undefined> {
  const out: io.containerd.cgroups.v1.ICPUStat = {};
  if (cpuacctDir !== undefined) {
    const total = await readU64(cpuacctDir, 'cpuacct.usage');
    if (total !== undefined) {
      const perCpuText = await readText(cpuacctDir, 'cpuacct.usage_percpu');
      const perCpu = (perCpuText ?? '')
        .trim()
        .split(/\s+/)
        .filter(Boolean)
        .map((v) => Long.fromString(v, true));
      // Prefer the nanosecond split (kernel >= 4.15); cpuacct.stat is in USER_HZ ticks.
      let user = await readU64(cpuacctDir, 'cpuacct.usage_user');
      let kernel = await readU64(cpuacctDir, 'cpuacct.usage_sys');
      if (user === undefined || kernel === undefined) {
        const stat = await readFlatKeyed(cpuacctDir, 'cpuacct.stat');
        user = stat?.get('user')?.multiply(NS_PER_USER_HZ) ?? Long.UZERO;
        kernel = stat?.get('system')?.multiply(NS_PER_USER_HZ) ?? Long.UZERO;
      }
      out.usage = { total, user, kernel, perCpu };
    }
  }
  if (cpuDir !== undefined) {
    const stat = await readFlatKeyed(cpuDir, 'cpu.stat');
    if (stat !== undefined) {
      out.throttling = {
        periods: stat.get('nr_periods') ?? Long.UZERO,
        throttledPeriods: stat.get('nr_throttled') ?? Long.UZERO,
        throttledTime: stat.get('throttled_time') ?? Long.UZERO,
      };
    }
  }
  return out.usage === undefined && out.throttling === undefined ? undefined : out;
}

/** memory.stat key → MemoryStat field; the total_ variants follow the same pattern. */
const MEMORY_STAT_FIELDS: Record<string, keyof IMemoryStat> = {
  cache: 'cache',
  rss: 'rss',
  rss_huge: 'rssHuge',
  mapped_file: 'mappedFile',
  dirty: 'dirty',
  writeback: 'writeback',
  pgpgin: 'pgPgIn',
  pgpgout: 'pgPgOut',
  pgfault: 'pgFault',
  pgmajfault: 'pgMajFault',
  inactive_anon: 'inactiveAnon',
  active_anon: 'activeAnon',
  inactive_file: 'inactiveFile',
  active_file: 'activeFile',
  unevictable: 'unevictable',
  hierarchical_memory_limit: 'hierarchicalMemoryLimit',
  hierarchical_memsw_limit: 'hierarchicalSwapLimit',
  total_cache: 'totalCache',
  total_rss: 'totalRss',
  total_rss_huge: 'totalRssHuge',
  total_mapped_file: 'totalMappedFile',
  total_dirty: 'totalDirty',
  total_writeback: 'totalWriteback',
  total_pgpgin: 'totalPgPgIn',
  total_pgpgout: 'totalPgPgOut',
  total_pgfault: 'totalPgFault',
  total_pgmajfault: 'totalPgMajFault',
  total_inactive_anon: 'totalInactiveAnon',
  total_active_anon: 'totalActiveAnon',
  total_inactive_file: 'totalInactiveFile',
  total_active_file: 'totalActiveFile',
  total_unevictable: 'totalUnevictable',
};

async function memoryEntry(dir: string, prefix: string): Promise<IMemoryEntry | undefined> {
  const usage = await readU64(dir, `${prefix}.usage_in_bytes`);
  if (usage === undefined) return undefined; // memsw/kmem files are absent when disabled
  return {
    usage,
    limit: (await readU64(dir, `${prefix}.limit_in_bytes`)) ?? Long.UZERO,
    max: (await readU64(dir, `${prefix}.max_usage_in_bytes`)) ?? Long.UZERO,
    failcnt: (await readU64(dir, `${prefix}.failcnt`)) ?? Long.UZERO,
  };
}

async function memory(dir: string): Promise<IMemoryStat | undefined> {
  const stat = await readFlatKeyed(dir, 'memory.stat');
  if (stat === undefined) return undefined;
  const out: IMemoryStat = {};
  const fields = out as Record<string, unknown>;
  for (const [key, value] of stat) {
    const field = MEMORY_STAT_FIELDS[key];
    if (field !== undefined) fields[field] = value;
  }
  const [usage, swap, kernel, kernelTcp] = await Promise.all([
    memoryEntry(dir, 'memory'),
    memoryEntry(dir, 'memory.memsw'),
    memoryEntry(dir, 'memory.kmem'),
    memoryEntry(dir, 'memory.kmem.tcp'),
  ]);
  if (usage) out.usage = usage;
  if (swap) out.swap = swap;
  if (kernel) out.kernel = kernel;
  if (kernelTcp) out.kernelTcp = kernelTcp;
  return out;
}

async function oomControl(dir: string): Promise<io.containerd.cgroups.v1.IMemoryOomControl | undefined> {
  const kv = await readFlatKeyed(dir, 'memory.oom_control');
  if (kv === undefined) return undefined;
  return {
    oomKillDisable: kv.get('oom_kill_disable') ?? Long.UZERO,
    underOom: kv.get('under_oom') ?? Long.UZERO,
    oomKill: kv.get('oom_kill') ?? Long.UZERO,
  };
}

/** Lines "maj:min Op value" (or "maj:min value" for time/sectors); the "Total" line is skipped. */
async function blkioEntries(dir: string, file: string, names: Map<string, string>): Promise<IBlkIOEntry[]> {
  const text = await readText(dir, file);
  if (text === undefined) return [];
  const out: IBlkIOEntry[] = [];
  for (const line of text.split('\n')) {
    const parts = line.trim().split(/\s+/);
    const m = /^(\d+):(\d+)$/.exec(parts[0] ?? '');
    if (!m || parts.length < 2) continue;
    const [op, raw] = parts.length >= 3 ? [parts[1] as string, parts[2] as string] : ['', parts[1] as string];
    if (!/^\d+$/.test(raw)) continue;
    const key = `${m[1]}:${m[2]}`;
    if (!names.has(key)) names.set(key, await blockDeviceName(Number(m[1]), Number(m[2])));
    out.push({
      op,
      device: names.get(key) ?? '',
      major: Long.fromString(m[1] as string, true),
      minor: Long.fromString(m[2] as string, true),
      value: Long.fromString(raw, true),
    });
  }
  return out;
}

async function blkio(dir: string): Promise<IBlkIOStat | undefined> {
  const names = new Map<string, string>();
  const read = (file: string): Promise<IBlkIOEntry[]> => blkioEntries(dir, file, names);
  const out: IBlkIOStat = {
    ioServiceBytesRecursive: await read('blkio.io_service_bytes_recursive'),
    ioServicedRecursive: await read('blkio.io_serviced_recursive'),
    ioQueuedRecursive: await read('blkio.io_queued_recursive'),
    ioServiceTimeRecursive: await read('blkio.io_service_time_recursive'),
    ioWaitTimeRecursive: await read('blkio.io_wait_time_recursive'),
    ioMergedRecursive: await read('blkio.io_merged_recursive'),
    ioTimeRecursive: await read('blkio.time_recursive'),
    sectorsRecursive: await read('blkio.sectors_recursive'),
  };
  // Without the CFQ/BFQ accounting files (modern multiqueue schedulers) the throttle layer is
  // the only source of per-device bytes and operations, as in containerd.
  if ((out.ioServicedRecursive ?? []).length === 0) {
    out.ioServiceBytesRecursive = await read('blkio.throttle.io_service_bytes_recursive');
    out.ioServicedRecursive = await read('blkio.throttle.io_serviced_recursive');
    if ((out.ioServicedRecursive ?? []).length === 0) {
      out.ioServiceBytesRecursive = await read('blkio.throttle.io_service_bytes');
      out.ioServicedRecursive = await read('blkio.throttle.io_serviced');
    }
  }
  return out;
}

async function hugetlb(dir: string): Promise<io.containerd.cgroups.v1.IHugetlbStat[]> {
  const out: io.containerd.cgroups.v1.IHugetlbStat[] = [];
  for (const pagesize of await hugePageSizes(dir, 'usage_in_bytes')) {
    const usage = await readU64(dir, `hugetlb.${pagesize}.usage_in_bytes`);
    if (usage === undefined) continue;
    out.push({
      pagesize,
      usage,
      max: (await readU64(dir, `hugetlb.${pagesize}.max_usage_in_bytes`)) ?? Long.UZERO,
      failcnt: (await readU64(dir, `hugetlb.${pagesize}.failcnt`)) ?? Long.UZERO,
    });
  }
  return out;
}

/** Collects from the v1 controller directories of one process (controller name → directory). */
export async function collectV1(dirs: Map<string, string>): Promise<io.containerd.cgroups.v1.Metrics> {
  const M: V1 = io.containerd.cgroups.v1;
  const at = (c: string): string | undefined => dirs.get(c);
  const m: IMetrics = {};
  const pidsDir = at('pids');
  const memDir = at('memory');
  const blkDir = at('blkio');
  const hugeDir = at('hugetlb');
  const [p, c, mem, oom, blk, huge] = await Promise.all([
    pidsDir === undefined ? undefined : pids(pidsDir),
    cpu(at('cpuacct'), at('cpu')),
    memDir === undefined ? undefined : memory(memDir),
    memDir === undefined ? undefined : oomControl(memDir),
    blkDir === undefined ? undefined : blkio(blkDir),
    hugeDir === undefined ? [] : hugetlb(hugeDir),
  ]);
  if (p) m.pids = p;
  if (c) m.cpu = c;
  if (mem) m.memory = mem;
  if (oom) m.memoryOomControl = oom;
  if (blk) m.blkio = blk;
  if (huge.length > 0) m.hugetlb = huge;
  return M.Metrics.create(m);
}
