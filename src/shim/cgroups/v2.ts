// io.containerd.cgroups.v2.Metrics from one unified-hierarchy directory. Limits reading "max"
// become 2^64-1 and absent files leave their fields unset, matching containerd's collector.
import Long from 'long';
import { io } from '../../gen/proto';
import {
  MAX_U64,
  hugePageSizes,
  parseNestedKeyed,
  parsePressure,
  readFlatKeyed,
  readText,
  readU64,
} from './files';

type IPSIStats = io.containerd.cgroups.v2.IPSIStats;
type IMemoryStat = io.containerd.cgroups.v2.IMemoryStat;

async function psi(dir: string, file: string): Promise<IPSIStats | undefined> {
  const text = await readText(dir, file);
  if (text === undefined) return undefined;
  const p = parsePressure(text);
  return p.some === undefined && p.full === undefined ? undefined : { some: p.some ?? null, full: p.full ?? null };
}

const CPU_STAT_FIELDS: Record<string, keyof io.containerd.cgroups.v2.ICPUStat> = {
  usage_usec: 'usageUsec',
  user_usec: 'userUsec',
  system_usec: 'systemUsec',
  nr_periods: 'nrPeriods',
  nr_throttled: 'nrThrottled',
  throttled_usec: 'throttledUsec',
  nr_bursts: 'nrBursts',
  burst_usec: 'burstUsec',
};

/** memory.stat keys whose snake_case name maps 1:1 onto a MemoryStat field (fields 1-31). */
const MEMORY_STAT_KEYS = [
  'anon', 'file', 'kernel_stack', 'slab', 'sock', 'shmem', 'file_mapped', 'file_dirty', 'file_writeback',
  'anon_thp', 'inactive_anon', 'active_anon', 'inactive_file', 'active_file', 'unevictable',
  'slab_reclaimable', 'slab_unreclaimable', 'pgfault', 'pgmajfault', 'workingset_refault',
  'workingset_activate', 'workingset_nodereclaim', 'pgrefill', 'pgscan', 'pgsteal', 'pgactivate',
  'pgdeactivate', 'pglazyfree', 'pglazyfreed', 'thp_fault_alloc', 'thp_collapse_alloc',
];

const camel = (s: string): string => s.replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase());

async function cpu(dir: string): Promise<io.containerd.cgroups.v2.ICPUStat | undefined> {
  const stat = await readFlatKeyed(dir, 'cpu.stat');
  if (stat === undefined) return undefined;
  const out: io.containerd.cgroups.v2.ICPUStat = {};
  const fields = out as Record<string, unknown>;
  for (const [key, value] of stat) {
    const field = CPU_STAT_FIELDS[key];
    if (field !== undefined) fields[field] = value;
  }
  const p = await psi(dir, 'cpu.pressure');
  if (p) out.psi = p;
  return out;
}

async function memory(dir: string): Promise<IMemoryStat | undefined> {
  const stat = await readFlatKeyed(dir, 'memory.stat');
  if (stat === undefined) return undefined;
  const out: IMemoryStat = {};
  const fields = out as Record<string, unknown>;
  for (const key of MEMORY_STAT_KEYS) {
    const v = stat.get(key);
    if (v !== undefined) fields[camel(key)] = v;
  }
  // Kernels >= 5.9 split the workingset counters into _anon and _file.
  for (const key of ['workingset_refault', 'workingset_activate']) {
    if (stat.has(key)) continue;
    const anon = stat.get(`${key}_anon`);
    const file = stat.get(`${key}_file`);
    if (anon !== undefined || file !== undefined) fields[camel(key)] = (anon ?? Long.UZERO).add(file ?? Long.UZERO);
  }
  const [usage, usageLimit, swapUsage, swapLimit, maxUsage, swapMaxUsage, p] = await Promise.all([
    readU64(dir, 'memory.current'),
    readU64(dir, 'memory.max'),
    readU64(dir, 'memory.swap.current'),
    readU64(dir, 'memory.swap.max'),
    readU64(dir, 'memory.peak'),
    readU64(dir, 'memory.swap.peak'),
    psi(dir, 'memory.pressure'),
  ]);
  if (usage !== undefined) out.usage = usage;
  if (usageLimit !== undefined) out.usageLimit = usageLimit;
  if (swapUsage !== undefined) out.swapUsage = swapUsage;
  if (swapLimit !== undefined) out.swapLimit = swapLimit;
  if (maxUsage !== undefined) out.maxUsage = maxUsage;
  if (swapMaxUsage !== undefined) out.swapMaxUsage = swapMaxUsage;
  if (p) out.psi = p;
  return out;
}

export async function memoryEvents(dir: string): Promise<io.containerd.cgroups.v2.IMemoryEvents | undefined> {
  const kv = await readFlatKeyed(dir, 'memory.events');
  if (kv === undefined) return undefined;
  return {
    low: kv.get('low') ?? Long.UZERO,
    high: kv.get('high') ?? Long.UZERO,
    max: kv.get('max') ?? Long.UZERO,
    oom: kv.get('oom') ?? Long.UZERO,
    oomKill: kv.get('oom_kill') ?? Long.UZERO,
  };
}

const u64 = (s: string | undefined): Long => (s !== undefined && /^\d+$/.test(s) ? Long.fromString(s, true) : Long.UZERO);

async function ioStat(dir: string): Promise<io.containerd.cgroups.v2.IIOStat | undefined> {
  const text = await readText(dir, 'io.stat');
  const p = await psi(dir, 'io.pressure');
  if (text === undefined && p === undefined) return undefined;
  const usage: io.containerd.cgroups.v2.IIOEntry[] = [];
  for (const { head, values } of parseNestedKeyed(text ?? '')) {
    const m = /^(\d+):(\d+)$/.exec(head);
    if (!m) continue;
    usage.push({
      major: u64(m[1]),
      minor: u64(m[2]),
      rbytes: u64(values.get('rbytes')),
      wbytes: u64(values.get('wbytes')),
      rios: u64(values.get('rios')),
      wios: u64(values.get('wios')),
    });
  }
  return p ? { usage, psi: p } : { usage };
}

async function rdma(dir: string): Promise<io.containerd.cgroups.v2.IRdmaStat | undefined> {
  const parse = (text: string): io.containerd.cgroups.v2.IRdmaEntry[] =>
    parseNestedKeyed(text).map(({ head, values }) => {
      const n = (k: string): number => {
        const v = values.get(k);
        return v === undefined || v === 'max' ? 0xffffffff : Number(v) >>> 0;
      };
      return { device: head, hcaHandles: n('hca_handle'), hcaObjects: n('hca_object') };
    });
  const [current, limit] = await Promise.all([readText(dir, 'rdma.current'), readText(dir, 'rdma.max')]);
  if (current === undefined && limit === undefined) return undefined;
  return { current: parse(current ?? ''), limit: parse(limit ?? '') };
}

async function hugetlb(dir: string): Promise<io.containerd.cgroups.v2.IHugeTlbStat[]> {
  const out: io.containerd.cgroups.v2.IHugeTlbStat[] = [];
  for (const pagesize of await hugePageSizes(dir, 'current')) {
    const current = await readU64(dir, `hugetlb.${pagesize}.current`);
    if (current === undefined) continue;
    out.push({ pagesize, current, max: (await readU64(dir, `hugetlb.${pagesize}.max`)) ?? MAX_U64 });
  }
  return out;
}

export async function collectV2(dir: string): Promise<io.containerd.cgroups.v2.Metrics> {
  const m: io.containerd.cgroups.v2.IMetrics = {};
  const [pidsCurrent, pidsMax, c, mem, events, ioS, rd, huge] = await Promise.all([
    readU64(dir, 'pids.current'),
    readU64(dir, 'pids.max'),
    cpu(dir),
    memory(dir),
    memoryEvents(dir),
    ioStat(dir),
    rdma(dir),
    hugetlb(dir),
  ]);
  if (pidsCurrent !== undefined) m.pids = { current: pidsCurrent, limit: pidsMax ?? MAX_U64 };
  if (c) m.cpu = c;
  if (mem) m.memory = mem;
  if (events) m.memoryEvents = events;
  if (ioS) m.io = ioS;
  if (rd) m.rdma = rd;
  if (huge.length > 0) m.hugetlb = huge;
  return io.containerd.cgroups.v2.Metrics.create(m);
}
