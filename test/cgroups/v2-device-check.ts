// Standalone cgroup v2 check for a machine without node_modules (the GPU machine): the same
// assertions as metrics.test.ts, with node:assert. Bundle and run it there:
//   npx esbuild test/cgroups/v2-device-check.ts --bundle --platform=node --format=cjs --outfile=.deps/kyb-cgv2/check.cjs
//   xz -c "$(command -v node)" > .deps/kyb-cgv2/node.xz    # the device has no node
//   (device) xz -dc .deps/kyb-cgv2/node.xz > /tmp/node && chmod +x /tmp/node && /tmp/node .deps/kyb-cgv2/check.cjs
import assert from 'node:assert/strict';
import Long from 'long';
import { io } from '../../src/gen/proto';
import { cgroupMode, collectMetrics, watchOom } from '../../src/shim/cgroups';
import { processCgroups } from '../../src/shim/cgroups/hierarchy';
import { createCgroup, skipReason, startChild } from './fixture';

const n = (v: unknown): bigint => BigInt(Long.isLong(v) ? (v as Long).toUnsigned().toString() : String(v ?? 0));
const show = (m: unknown): string => JSON.stringify(m, (_k, v) => (Long.isLong(v) ? (v as Long).toUnsigned().toString() : v));

async function main(): Promise<void> {
  console.log('mode', cgroupMode(), 'skip?', skipReason(), 'self', show(Object.fromEntries(processCgroups('self').v1)), processCgroups('self').unified);
  const cg = createCgroup();
  const child = await startChild();
  try {
    cg.add(child.pid);
    await child.send('alloc');
    const a = await collectMetrics(child.pid);
    await child.send('spin');
    const b = await collectMetrics(child.pid);
    assert.equal(a.typeUrl, 'io.containerd.cgroups.v2.Metrics');
    const ma = io.containerd.cgroups.v2.Metrics.decode(a.value);
    const mb = io.containerd.cgroups.v2.Metrics.decode(b.value);
    console.log('metrics', show(mb));
    assert.ok(n(ma.pids?.current) >= 1n);
    assert.ok(n(ma.memory?.usage) > 0n);
    assert.ok(n(mb.cpu?.usageUsec) > n(ma.cpu?.usageUsec));
    cg.limitMemory(256 << 20);
    const c = io.containerd.cgroups.v2.Metrics.decode((await collectMetrics(child.pid)).value);
    assert.equal(n(c.memory?.usageLimit), BigInt(256 << 20));
  } finally {
    await child.kill();
    await cg.remove();
  }
  const cg2 = createCgroup();
  const child2 = await startChild();
  try {
    cg2.add(child2.pid);
    cg2.limitMemory(16 << 20);
    let fired = 0;
    const oom = new Promise<void>((resolve) => {
      const w = watchOom(child2.pid, () => { fired++; resolve(); w.close(); });
    });
    child2.proc.stdin.write('hog\n');
    const exit = await child2.exited;
    assert.equal(exit.signal, 'SIGKILL');
    await Promise.race([oom, new Promise((_r, rej) => setTimeout(() => rej(new Error('no OOM event')), 10000))]);
    console.log('oom fired', fired);
  } finally {
    await child2.kill();
    await cg2.remove();
  }
  console.log('V2 CHECK OK');
}
main().catch((e) => { console.error('V2 CHECK FAILED', e); process.exit(1); });
