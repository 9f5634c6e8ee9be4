// Metrics and OOM watching against real cgroups created for a real child process.
import { afterEach, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import Long from 'long';
import { io } from '../../src/gen/proto';
import * as native from '../../src/native';
import { cgroupMode, collectMetrics, watchOom, type OomDelivery } from '../../src/shim/cgroups';
import { parseMountinfo, parseProcCgroup, processCgroups, resolveUnder } from '../../src/shim/cgroups/hierarchy';
import { createCgroup, skipReason, startChild, type Child, type TestCgroup } from './fixture';

const reason = skipReason();
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length) await (cleanups.pop() as () => Promise<void>)();
});

async function childInCgroup(): Promise<{ cg: TestCgroup; child: Child }> {
  const cg = createCgroup();
  cleanups.push(() => cg.remove());
  const child = await startChild();
  cleanups.push(() => child.kill());
  cg.add(child.pid);
  return { cg, child };
}

type V1Metrics = io.containerd.cgroups.v1.Metrics;
type V2Metrics = io.containerd.cgroups.v2.Metrics;

async function metrics(pid: number): Promise<{ v1?: V1Metrics; v2?: V2Metrics }> {
  const { typeUrl, value } = await collectMetrics(pid);
  if (typeUrl === 'io.containerd.cgroups.v2.Metrics') return { v2: io.containerd.cgroups.v2.Metrics.decode(value) };
  expect(typeUrl).toBe('io.containerd.cgroups.v1.Metrics');
  return { v1: io.containerd.cgroups.v1.Metrics.decode(value) };
}

const n = (v: Long | number | null | undefined): bigint => BigInt(Long.isLong(v) ? (v as Long).toUnsigned().toString() : String(v ?? 0));

describe('cgroup hierarchy discovery', () => {
  it('finds this process in every mounted hierarchy', () => {
    const mode = cgroupMode();
    expect(['v1', 'v2', 'hybrid']).toContain(mode);
    const own = processCgroups('self');
    if (mode === 'v2') expect(own.unified).toBeDefined();
    else expect(own.v1.get('memory')).toMatch(/^\//);
    for (const dir of own.v1.values()) expect(fs.existsSync(`${dir}/cgroup.procs`)).toBe(true);
    if (own.unified) expect(fs.existsSync(`${own.unified}/cgroup.procs`)).toBe(true);
  });

  it('maps paths under a mount whose root is a sub-cgroup (cgroup namespace / bind mount)', () => {
    const mounts = parseMountinfo(
      [
        '40 30 0:37 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate',
        '31 30 0:28 /kubepods/pod1 /host/mem rw,relatime - cgroup cgroup rw,memory',
        '32 30 0:29 / /sys/fs/cgroup/cpu\\040acct rw - cgroup cgroup rw,cpu,cpuacct',
        '33 30 0:30 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd,release_agent=/x',
      ].join('\n'),
    );
    expect(mounts.map((m) => [m.version, m.mountPoint, m.controllers])).toEqual([
      [2, '/sys/fs/cgroup', []],
      [1, '/host/mem', ['memory']],
      [1, '/sys/fs/cgroup/cpu acct', ['cpu', 'cpuacct']],
      [1, '/sys/fs/cgroup/systemd', ['name=systemd']],
    ]);
    const mem = mounts[1]!;
    expect(resolveUnder(mem, '/kubepods/pod1/ctr')).toBe('/host/mem/ctr');
    expect(resolveUnder(mem, '/kubepods/pod1')).toBe('/host/mem');
    expect(resolveUnder(mem, '/kubepods/pod10')).toBeUndefined();
    expect(resolveUnder(mounts[0]!, '/../outside')).toBeUndefined();
    expect(cgroupMode(mounts)).toBe('hybrid');
    expect(cgroupMode([mounts[0]!, mounts[3]!])).toBe('v2');

    const procs = parseProcCgroup('4:memory:/a/b\n2:cpu,cpuacct:/\n1:name=systemd:/s\n0::/u/v\n');
    expect(procs.v1.get('memory')).toBe('/a/b');
    expect(procs.v1.get('cpuacct')).toBe('/');
    expect(procs.v1.get('name=systemd')).toBe('/s');
    expect(procs.unified).toBe('/u/v');
  });
});

describe.skipIf(reason !== undefined)(`metrics of a real cgroup${reason ? ` (skipped: ${reason})` : ''}`, () => {
  it('reports pids, memory and growing cpu usage', async () => {
    const { child } = await childInCgroup();
    await child.send('alloc');
    const first = await metrics(child.pid);
    await child.send('spin');
    await child.send('alloc');
    const second = await metrics(child.pid);

    if (first.v2 && second.v2) {
      const a = first.v2;
      const b = second.v2;
      expect(n(a.pids?.current)).toBeGreaterThanOrEqual(1n);
      expect(n(a.memory?.usage)).toBeGreaterThan(0n);
      expect(n(a.memory?.anon)).toBeGreaterThan(0n);
      expect(n(b.memory?.usage)).toBeGreaterThan(0n);
      expect(n(b.cpu?.usageUsec)).toBeGreaterThan(n(a.cpu?.usageUsec));
      expect(n(b.cpu?.userUsec) + n(b.cpu?.systemUsec)).toBeGreaterThan(0n);
      expect(b.memoryEvents).toBeDefined();
      return;
    }
    const a = first.v1 as V1Metrics;
    const b = second.v1 as V1Metrics;
    expect(n(a.pids?.current)).toBeGreaterThanOrEqual(1n);
    expect(n(a.pids?.limit)).toBe(0n); // unlimited
    expect(n(a.memory?.usage?.usage)).toBeGreaterThan(0n);
    expect(n(a.memory?.usage?.limit)).toBeGreaterThan(1n << 53n); // "no limit" needs the full u64
    expect(n(a.memory?.rss) + n(a.memory?.cache)).toBeGreaterThan(0n);
    expect(n(a.memory?.totalRss)).toBeGreaterThanOrEqual(n(a.memory?.rss));
    expect(a.memoryOomControl).toBeDefined();
    expect(n(b.cpu?.usage?.total)).toBeGreaterThan(n(a.cpu?.usage?.total));
    expect(n(b.cpu?.usage?.user) + n(b.cpu?.usage?.kernel)).toBeGreaterThan(0n);
    const perCpu = (b.cpu?.usage?.perCpu ?? []).map(n).reduce((x, y) => x + y, 0n);
    expect(perCpu).toBeGreaterThan(0n);
    expect(b.cpu?.throttling).toBeDefined();
    expect(b.blkio).toBeDefined();
  });

  it('reports a memory limit that was set', async () => {
    const { cg, child } = await childInCgroup();
    cg.limitMemory(256 << 20);
    const m = await metrics(child.pid);
    if (m.v2) expect(n(m.v2.memory?.usageLimit)).toBe(BigInt(256 << 20));
    else expect(n(m.v1?.memory?.usage?.limit)).toBe(BigInt(256 << 20));
  });

  it('fails with NOT_FOUND for a process that has exited', async () => {
    const child = await startChild();
    const pid = child.pid;
    await child.kill();
    await expect(collectMetrics(pid)).rejects.toMatchObject({ code: 'KYB_ERR_NOT_FOUND' });
  });
});

function addonReason(): string | undefined {
  try {
    native.oomWatchActive(0);
    return undefined;
  } catch (err) {
    return `native addon not loadable (${(err as Error).message.split(';')[0]})`;
  }
}

// v1 has two delivery paths (addon eventfd, counter polling); v2 has one (inotify on memory.events).
const oomPaths: Array<{ name: string; forcePolling: boolean; via: OomDelivery; skip?: string }> =
  reason === undefined && cgroupMode() !== 'v2'
    ? [
        { name: 'v1 eventfd via the addon', forcePolling: false, via: 'eventfd', skip: addonReason() },
        { name: 'v1 polling of memory.oom_control', forcePolling: true, via: 'polling' },
      ]
    : [{ name: 'memory.events', forcePolling: false, via: 'inotify' }];

describe.skipIf(reason !== undefined)(`OOM watch${reason ? ` (skipped: ${reason})` : ''}`, () => {
  for (const p of oomPaths) {
    it.skipIf(p.skip !== undefined)(`fires when the process is OOM-killed under a 16 MiB limit (${p.name}${p.skip ? `; skipped: ${p.skip}` : ''})`, async () => {
      const { cg, child } = await childInCgroup();
      cg.limitMemory(16 << 20);
      let fired = 0;
      let resolveOom = (): void => {};
      const oom = new Promise<void>((resolve) => (resolveOom = resolve));
      const w = watchOom(
        child.pid,
        () => {
          fired++;
          resolveOom();
        },
        { forcePolling: p.forcePolling },
      );
      cleanups.push(async () => w.close());
      // The addon loads asynchronously; the OOM must happen after registration.
      while (w.via === 'pending') await new Promise((r) => setTimeout(r, 20));
      expect(w.via).toBe(p.via);
      child.proc.stdin.write('hog\n');
      const exit = await child.exited;
      expect(exit.signal).toBe('SIGKILL');
      await oom;
      expect(fired).toBeGreaterThanOrEqual(1);
    });

    it.skipIf(p.skip !== undefined)(`stops silently when the cgroup is removed (${p.name}${p.skip ? `; skipped: ${p.skip}` : ''})`, async () => {
      const { cg, child } = await childInCgroup();
      let fired = false;
      const w = watchOom(child.pid, () => (fired = true), { forcePolling: p.forcePolling });
      while (w.via === 'pending') await new Promise((r) => setTimeout(r, 20));
      expect(w.via).toBe(p.via);
      await child.kill();
      await cg.remove();
      // The watch notices the removal by itself (poll read fails / eventfd fires on rmdir).
      while (w.via !== 'none') await new Promise((r) => setTimeout(r, 50));
      expect(fired).toBe(false);
      w.close();
    });
  }

  it('is a silent no-op for a process that has already exited', async () => {
    const child = await startChild();
    const pid = child.pid;
    await child.kill();
    const w = watchOom(pid, () => {
      throw new Error('must not fire');
    });
    expect(w.via).toBe('none');
    w.close();
    w.close();
  });
});
