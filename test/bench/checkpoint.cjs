#!/usr/bin/env node
// Benchmark: container checkpoint and restore through containerd, the kybernate shim against containerd's
// runc shim, on every containerd version installed here, rounds interleaved:
//   - `ctr container checkpoint --task --rw <id> <ref>` of a running busybox counter;
//   - `ctr container restore --live --rw <id> <ref>` after the container was removed (the shim starts,
//     verifies the manifest, runc restore runs, the task is RUNNING when ctr returns).
// Usage: node test/bench/checkpoint.cjs   (env: KYBERNATE_BENCH_CKPT_N=5, KYBERNATE_BENCH_VERSIONS=1.6,2.1)
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { loadHelpers, median, splitWall, traceReader } = require('./helpers.cjs');

const N = Number(process.env.KYBERNATE_BENCH_CKPT_N ?? 5);
const COUNTER = ['sh', '-c', 'i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.1; done'];
// CRIU dumps hang on VMs whose debug registers do not work (the CI VM): see README "This VM".
const DAEMON_ENV = { CRIU_FAULT: '130', KYBERNATE_CRIU_NO_BREAKPOINTS: '1' };

async function timed(fn) {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

async function ctrOk(cd, args) {
  const r = await cd.ctr(args);
  if (r.code !== 0) throw new Error(`ctr ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

async function discard(h, cd, id) {
  await cd.ctr(['tasks', 'kill', '-s', 'KILL', id]);
  await h.waitFor(`${id} to stop`, async () => (await h.tasks(cd)).get(id)?.status !== 'RUNNING');
  await cd.ctr(['tasks', 'rm', '-f', id]);
  await cd.ctr(['containers', 'rm', id]);
}

async function round(h, cd, rt, i, readTrace) {
  const id = `bench-ckpt-${rt.kind}-${i}`;
  const ref = `kybernate.bench/checkpoint/${id}:1`;
  try {
    await ctrOk(cd, ['run', '-d', '--runtime', rt.runtime, h.TEST_IMAGE, id, ...COUNTER]);
    await h.waitFor(`${id} to run`, async () => (await h.tasks(cd)).get(id)?.status === 'RUNNING');
    const checkpoint = await timed(() => ctrOk(cd, ['containers', 'checkpoint', '--task', '--rw', id, ref]));
    await discard(h, cd, id);
    readTrace();
    const restore = await timed(() => ctrOk(cd, ['containers', 'restore', '--live', '--rw', id, ref]));
    const split = splitWall(restore, readTrace().filter((l) => l.id === id));
    if ((await h.tasks(cd)).get(id)?.status !== 'RUNNING') throw new Error(`${rt.kind}: ${id} is not running after restore`);
    return { checkpoint, restore, split };
  } finally {
    await h.removeContainer(cd, id);
    await cd.ctr(['images', 'rm', ref]);
  }
}

function fmt(ms) { return `${ms.toFixed(0)} ms`; }

async function benchVersion(h, version, runtimes) {
  const traceFile = path.join(os.tmpdir(), `kybernate-bench-ckpt-trace-${process.pid}.jsonl`);
  fs.rmSync(traceFile, { force: true });
  const readTrace = traceReader(traceFile);
  const cd = await h.startContainerd(version, { namespace: 'kybernate-bench-ckpt', env: { ...DAEMON_ENV, KYBERNATE_TRACE: traceFile } });
  const res = Object.fromEntries(runtimes.map((rt) => [rt.kind, { checkpoint: [], restore: [], splits: [] }]));
  try {
    console.log(`\ncontainerd ${version}: checkpoint/restore of a busybox counter, ${N} rounds per runtime, interleaved (1 warm-up each)`);
    for (const rt of runtimes) await round(h, cd, rt, 'warm', readTrace);
    for (let i = 0; i < N; i++) {
      // Alternate which runtime goes first, so drift hits both alike.
      const order = i % 2 === 0 ? runtimes : [...runtimes].reverse();
      for (const rt of order) {
        const r = await round(h, cd, rt, i, readTrace);
        res[rt.kind].checkpoint.push(r.checkpoint);
        res[rt.kind].restore.push(r.restore);
        res[rt.kind].splits.push(r.split);
      }
      process.stdout.write('.');
    }
    process.stdout.write('\n');
  } finally {
    await cd.stop();
    fs.rmSync(traceFile, { force: true });
  }
  const r = res.runc;
  const k = res.kybernate;
  for (const op of ['checkpoint', 'restore']) {
    const rm = median(r[op]);
    const km = k ? median(k[op]) : undefined;
    const line = `  ctr container ${op}: runc shim ${fmt(rm)}` +
      (km === undefined ? '' : `, kybernate ${fmt(km)}, kybernate/runc ${(km / rm).toFixed(2)}x`) +
      `  (min ${fmt(Math.min(...r[op]))}${k ? ` / ${fmt(Math.min(...k[op]))}` : ''})`;
    console.log(line);
  }
  if (k) {
    const m = (f) => median(k.splits.map(f)).toFixed(1);
    console.log(`  kybernate cold restore split (medians, ms): containerd+ctr ${m((x) => x.containerd)}, front ${m((x) => x.front)}, ` +
      `daemon ${m((x) => x.daemon)}, runc+criu ${m((x) => x.runc)}`);
  }
}

async function main() {
  const h = loadHelpers();
  const runtimes = [{ kind: 'runc', runtime: h.RUNC_RUNTIME }];
  if (fs.existsSync(path.join(h.REPO_ROOT, 'bin', 'containerd-shim-kybernate-v2'))) {
    runtimes.push({ kind: 'kybernate', runtime: h.SHIM_RUNTIME });
  } else {
    console.log('kybernate shim is not built (run make build): runc numbers only.');
  }
  const wanted = process.env.KYBERNATE_BENCH_VERSIONS?.split(',').map((s) => s.trim());
  for (const v of h.ALL_VERSIONS) {
    if (wanted && !wanted.includes(v)) continue;
    const missing = h.missingReason(v);
    if (missing) { console.log(`\ncontainerd ${v}: skipped: ${missing}`); continue; }
    await benchVersion(h, v, runtimes);
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? err.stack : err);
  process.exitCode = 1;
});
