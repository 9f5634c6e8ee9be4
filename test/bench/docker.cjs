#!/usr/bin/env node
// Benchmark: Docker Engine as the client. Median wall time of `docker run --rm --runtime <rt> --network none
// <image> true` for Docker's runc runtime and `--runtime kybernate`, N runs each, interleaved, against a
// private dockerd on a private containerd (test/harness/docker.ts), per containerd version installed.
// Usage: node test/bench/docker.cjs   (env: KYBERNATE_BENCH_DOCKER_N=15, KYBERNATE_BENCH_VERSIONS=2.1)
// Without dockerd (make setup installs Debian's docker.io) it says so and exits 0.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { loadHelpers, median } = require('./helpers.cjs');

const N = Number(process.env.KYBERNATE_BENCH_DOCKER_N ?? 15);
const VERSIONS = ['2.1', '1.7'];

async function timedRun(d, runtime) {
  const args = ['run', '--rm', '--runtime', runtime, '--network', 'none', 'busybox:kybernate-test', 'true'];
  const t0 = process.hrtime.bigint();
  const r = await d.docker(args);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.code !== 0) throw new Error(`docker ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
  return ms;
}

function fmt(ms) { return `${ms.toFixed(0)} ms`; }

async function benchVersion(h, version, runtimes) {
  const cd = await h.startContainerd(version, { namespace: 'kybernate-bench-docker' });
  let d;
  try {
    d = await h.startDocker(cd);
    console.log(`\n${h.dockerdVersion()} on containerd ${version}: docker run --rm … true, ${N} runs per runtime, interleaved (1 warm-up each)`);
    const times = Object.fromEntries(runtimes.map((rt) => [rt, []]));
    for (const rt of runtimes) await timedRun(d, rt);
    for (let i = 0; i < N; i++) {
      const order = i % 2 === 0 ? runtimes : [...runtimes].reverse();
      for (const rt of order) times[rt].push(await timedRun(d, rt));
      process.stdout.write('.');
    }
    process.stdout.write('\n');
    const r = median(times.runc);
    const k = times[h.DOCKER_RUNTIME] ? median(times[h.DOCKER_RUNTIME]) : undefined;
    console.log(`  docker run --rm: runc ${fmt(r)}` +
      (k === undefined ? '' : `, kybernate ${fmt(k)}, kybernate/runc ${(k / r).toFixed(2)}x`) +
      `  (min ${fmt(Math.min(...times.runc))}${k === undefined ? '' : ` / ${fmt(Math.min(...times[h.DOCKER_RUNTIME]))}`})`);
  } finally {
    await d?.stop();
    await cd.stop();
  }
}

async function main() {
  const h = loadHelpers("export { startDocker, dockerMissingReason, dockerdVersion, DOCKER_RUNTIME } from './harness/docker';\n");
  const missing = h.dockerMissingReason();
  if (missing) {
    console.log(`docker run bench skipped: ${missing}`);
    return;
  }
  const runtimes = ['runc'];
  if (fs.existsSync(path.join(h.REPO_ROOT, 'bin', 'containerd-shim-kybernate-v2'))) runtimes.push(h.DOCKER_RUNTIME);
  else console.log('kybernate shim is not built (run make build): runc numbers only.');
  const wanted = process.env.KYBERNATE_BENCH_VERSIONS?.split(',').map((s) => s.trim());
  for (const v of VERSIONS) {
    if (wanted && !wanted.includes(v)) continue;
    const why = h.missingReason(v);
    if (why) { console.log(`\ncontainerd ${v}: skipped: ${why}`); continue; }
    await benchVersion(h, v, runtimes);
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? err.stack : err);
  process.exitCode = 1;
});
