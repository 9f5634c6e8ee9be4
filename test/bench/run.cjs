#!/usr/bin/env node
// Benchmark: the kybernate shim against containerd's runc shim, on every containerd version installed here.
//   - median wall time of `ctr run --rm <image> <id> true`, N runs per runtime, interleaved;
//   - shim RSS per container, with 1 container and with 10 containers in one group.
// Usage: node test/bench/run.cjs   (env: KYBERNATE_BENCH_N=15, KYBERNATE_BENCH_VERSIONS=1.6,2.1)
// The containerd harness and the e2e helpers are TypeScript; they are bundled in memory with esbuild.
'use strict';

const path = require('node:path');
const fs = require('node:fs');
const os = require('node:os');
const { loadHelpers, median, splitWall, traceReader } = require('./helpers.cjs');

const REPO = path.resolve(__dirname, '..', '..');
const N = Number(process.env.KYBERNATE_BENCH_N ?? 15);
const GROUP_SIZE = 10;
/** Containers started one after another into one group, per round (issue 13's "20 in one group"). */
const GROUP_START = 20;
const GROUP_ROUNDS = Number(process.env.KYBERNATE_BENCH_GROUP_ROUNDS ?? 3);

function rssKiB(pid) {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** Private memory (KiB): what the process alone costs; RSS also counts pages it shares (node's own text). */
function privateKiB(pid) {
  try {
    const t = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    const f = (k) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(t)?.[1] ?? 0);
    return f('Private_Clean') + f('Private_Dirty');
  } catch {
    return 0;
  }
}

function parentPid(pid) {
  const m = /^PPid:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

function cmdline(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return '';
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function timeRun(h, cd, rt, id) {
  const t0 = process.hrtime.bigint();
  const r = await cd.ctr(['run', '--rm', '--runtime', rt.runtime, h.TEST_IMAGE, id, 'true']);
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.code !== 0) throw new Error(`${rt.kind}: ctr run failed (${r.code}): ${r.stderr.trim()}`);
  return s;
}

/** Sum of shim RSS (KiB) divided by the number of containers, with `count` sleeping containers in one group. */
async function rssPerContainer(h, cd, rt, count, tag) {
  const ids = Array.from({ length: count }, (_, i) => `bench-rss-${tag}-${rt.kind}-${i}`);
  const group = `bench-${tag}-${rt.kind}`;
  try {
    for (const id of ids) {
      await cd.ctrOk(['run', '-d', '--runtime', rt.runtime, '--annotation', `${rt.groupAnnotation}=${group}`,
        h.TEST_IMAGE, id, 'sleep', '1000']);
    }
    await h.waitFor('bench containers to run', async () => {
      const t = await h.tasks(cd);
      return ids.every((id) => t.get(id)?.status === 'RUNNING');
    });
    // Let start-up garbage settle before reading RSS.
    await sleep(1000);
    const t = await h.tasks(cd);
    // The shims serving these containers are their inits' parents (the shim is their subreaper).
    const serving = [...new Set(ids.map((id) => parentPid(t.get(id).pid)))]
      .filter((pid) => cmdline(pid).includes(rt.shimName));
    const all = h.shimProcesses(cd, rt.shimName);
    const pids = serving.length > 0 ? serving : all;
    const total = pids.reduce((sum, pid) => sum + rssKiB(pid), 0);
    const priv = pids.reduce((sum, pid) => sum + privateKiB(pid), 0);
    return { perContainer: total / count, privatePerContainer: priv / count, shims: pids.length, others: all.filter((p) => !pids.includes(p)).length };
  } finally {
    for (const id of ids) await h.removeContainer(cd, id);
  }
}

/** Wall time (s) of GROUP_START `ctr run -d` into one new group, one after another; removed afterwards. */
async function timeGroupStart(h, cd, rt, tag) {
  const group = `bench-gs-${tag}-${rt.kind}`;
  const ids = Array.from({ length: GROUP_START }, (_, i) => `bench-gs-${tag}-${rt.kind}-${i}`);
  try {
    const t0 = process.hrtime.bigint();
    for (const id of ids) {
      await cd.ctrOk(['run', '-d', '--runtime', rt.runtime, '--annotation', `${rt.groupAnnotation}=${group}`,
        h.TEST_IMAGE, id, 'sleep', '1000']);
    }
    return Number(process.hrtime.bigint() - t0) / 1e9;
  } finally {
    for (const id of ids) await h.removeContainer(cd, id);
  }
}

/** Idle spare shim daemons (src/shim/spare): one per node and build, whichever containerd booted it. */
function spareRssKiB() {
  let total = 0; let priv = 0; let count = 0;
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const argv = cmdline(Number(e)).trim().split(/\s+/);
    if (argv.some((a) => a.endsWith('containerd-shim-kybernate-v2.cjs')) && argv[argv.length - 1] === 'spare') {
      total += rssKiB(Number(e)); priv += privateKiB(Number(e)); count++;
    }
  }
  return { total, priv, count };
}

function fmtS(x) { return x === undefined ? '-' : `${(x * 1000).toFixed(0)} ms`; }
function fmtMiB(kib) { return kib === undefined ? '-' : `${(kib / 1024).toFixed(1)} MiB`; }
function ratio(a, b) { return a === undefined || b === undefined || b === 0 ? '-' : `${(a / b).toFixed(2)}x`; }

function table(rows) {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => String(r[c]).length)));
  return rows.map((r) => r.map((cell, c) => (c === 0 ? String(cell).padEnd(widths[c]) : String(cell).padStart(widths[c]))).join('   ')).join('\n');
}

async function benchVersion(h, version, runtimes) {
  const traceFile = path.join(os.tmpdir(), `kybernate-bench-trace-${process.pid}.jsonl`);
  fs.rmSync(traceFile, { force: true });
  const readTrace = traceReader(traceFile);
  const cd = await h.startContainerd(version, { namespace: 'kybernate-bench', env: { KYBERNATE_TRACE: traceFile } });
  const res = {};
  const splits = [];
  try {
    const actual = (await cd.ctrOk(['version'])).match(/Server:[\s\S]*?Version:\s+(\S+)/)?.[1] ?? version;
    console.log(`\ncontainerd ${actual}: ${N} runs per runtime, interleaved (1 warm-up each, not counted)`);
    for (const rt of runtimes) {
      res[rt.kind] = { times: [] };
      await timeRun(h, cd, rt, `bench-warm-${rt.kind}`);
    }
    for (let i = 0; i < N; i++) {
      for (const rt of runtimes) {
        const id = `bench-${rt.kind}-${i}`;
        readTrace();
        const s = await timeRun(h, cd, rt, id);
        res[rt.kind].times.push(s);
        if (rt.kind === 'kybernate') splits.push(splitWall(s * 1000, readTrace().filter((l) => l.id === id || l.id === '')));
      }
      process.stdout.write('.');
    }
    process.stdout.write('\n');
    for (const rt of runtimes) res[rt.kind].group = [];
    for (let i = 0; i < GROUP_ROUNDS; i++) {
      for (const rt of runtimes) res[rt.kind].group.push(await timeGroupStart(h, cd, rt, i));
    }
    for (const rt of runtimes) {
      res[rt.kind].median = median(res[rt.kind].times);
      const one = await rssPerContainer(h, cd, rt, 1, 'one');
      const many = await rssPerContainer(h, cd, rt, GROUP_SIZE, 'group');
      res[rt.kind].rss1 = one.perContainer;
      res[rt.kind].rss10 = many.perContainer;
      res[rt.kind].priv1 = one.privatePerContainer;
      res[rt.kind].priv10 = many.privatePerContainer;
      res[rt.kind].shims10 = many.shims;
      res[rt.kind].leftover = Math.max(one.others, many.others);
    }
  } finally {
    await cd.stop();
    fs.rmSync(traceFile, { force: true });
  }
  const r = res.runc;
  const k = res.kybernate;
  const rows = [
    ['', 'runc shim', 'kybernate', 'kybernate/runc'],
    ['ctr run --rm ... true, median', fmtS(r.median), fmtS(k?.median), ratio(k?.median, r.median)],
    ['  min .. max', `${fmtS(Math.min(...r.times))} .. ${fmtS(Math.max(...r.times))}`,
      k ? `${fmtS(Math.min(...k.times))} .. ${fmtS(Math.max(...k.times))}` : '-', ''],
    [`${GROUP_START} ctr run -d into one group, median of ${GROUP_ROUNDS}`, fmtS(median(r.group)), fmtS(k && median(k.group)),
      ratio(k && median(k.group), median(r.group))],
    ['shim RSS per container, 1 container', fmtMiB(r.rss1), fmtMiB(k?.rss1), ratio(k?.rss1, r.rss1)],
    [`shim RSS per container, ${GROUP_SIZE} in one group`, fmtMiB(r.rss10), fmtMiB(k?.rss10), ratio(k?.rss10, r.rss10)],
    ['shim private memory per container, 1 container', fmtMiB(r.priv1), fmtMiB(k?.priv1), ratio(k?.priv1, r.priv1)],
    [`shim private memory per container, ${GROUP_SIZE} in one group`, fmtMiB(r.priv10), fmtMiB(k?.priv10), ratio(k?.priv10, r.priv10)],
    [`  shim processes for the ${GROUP_SIZE}`, String(r.shims10), k ? String(k.shims10) : '-', ''],
    // containerd's runc shim runs one shim per container unless told to group (ctr, plain containerd);
    // kybernate's point of comparison for a group is then the runc shim's own per-container footprint.
    [`kybernate ${GROUP_SIZE}-group vs runc 1 per shim`, fmtMiB(r.rss1), fmtMiB(k?.rss10), ratio(k?.rss10, r.rss1)],
  ];
  console.log(table(rows));
  if (splits.length > 0) {
    const m = (f) => median(splits.map(f));
    const paths = {};
    for (const sp of splits) for (const [p, n] of Object.entries(sp.paths)) paths[p] = (paths[p] ?? 0) + n;
    console.log(`kybernate ctr run --rm split (medians, ms): containerd+ctr ${m((x) => x.containerd).toFixed(1)}, ` +
      `front ${m((x) => x.front).toFixed(1)}, daemon ${m((x) => x.daemon).toFixed(1)}, runc ${m((x) => x.runc).toFixed(1)}`);
    console.log(`  front paths taken: ${Object.entries(paths).map(([p, n]) => `${p} ${n}`).join(', ') || 'none traced'}`);
  }
  const spare = spareRssKiB();
  if (spare.count > 0) {
    console.log(`idle spare shim daemon(s): ${spare.count}, RSS ${fmtMiB(spare.total)}, private ${fmtMiB(spare.priv)} (one per node, not per container)`);
  }
  for (const rt of runtimes) {
    const n = res[rt.kind].leftover;
    if (n > 0) console.log(`note: ${n} other ${rt.shimName} process(es) of this containerd were alive (not serving the measured containers; not counted)`);
  }
}

async function main() {
  const h = loadHelpers();
  const kybernateBin = path.join(REPO, 'bin', 'containerd-shim-kybernate-v2');
  const runtimes = [{ kind: 'runc', runtime: h.RUNC_RUNTIME, groupAnnotation: 'io.containerd.runc.v2.group', shimName: 'containerd-shim-runc-v2' }];
  if (fs.existsSync(kybernateBin)) {
    runtimes.push({ kind: 'kybernate', runtime: h.SHIM_RUNTIME, groupAnnotation: 'io.kybernate.group', shimName: 'containerd-shim-kybernate-v2' });
  } else {
    console.log('kybernate shim is not built (bin/containerd-shim-kybernate-v2 missing; run make build): runc numbers only.');
  }
  const wanted = process.env.KYBERNATE_BENCH_VERSIONS?.split(',').map((s) => s.trim());
  let ran = 0;
  for (const v of h.ALL_VERSIONS) {
    if (wanted && !wanted.includes(v)) continue;
    const missing = h.missingReason(v);
    if (missing) {
      console.log(`\ncontainerd ${v}: skipped: ${missing}`);
      continue;
    }
    await benchVersion(h, v, runtimes);
    ran++;
  }
  if (ran === 0) {
    console.error('no containerd version available to benchmark');
    process.exitCode = 1;
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? err.stack : err);
  process.exitCode = 1;
});
