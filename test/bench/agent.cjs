#!/usr/bin/env node
// Benchmark: operations through the node agent (bin/kybernate-agent) next to the stock path, measured in
// the same run, on every containerd version installed here, rounds interleaved, medians:
//   1. suspend and resume of a CUDA container on the fake libcuda (test/e2e/support/operations.ts):
//      AgentClient (gRPC, one connection) vs the shim's Control service called directly (ShimClient over
//      ttrpc, one connection): the cost of the agent hop (issue 10: at most +5 ms);
//   2. checkpoint and restore of a busybox counter: through the agent (its snapshot directory), with
//      `ctr container checkpoint --task --rw` / `ctr container restore --live --rw` (the content store),
//      and with plain `runc checkpoint` / `runc restore` of an OCI bundle of the same image and command
//      (issue 10: restore through the agent at most 1.1x runc, and faster than ctr).
// Usage: node test/bench/agent.cjs   (env: KYBERNATE_BENCH_SUSPEND_N=7, KYBERNATE_BENCH_CKPT_N=5,
//        KYBERNATE_BENCH_VERSIONS=1.6,2.1). Timings are printed, never asserted.
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { loadHelpers, median } = require('./helpers.cjs');
const { AGENT_BIN, PlainRunc, removeNamespaceCgroups, runBench, startAgent, timed, ms, diff, ratio, table } = require('./agent-support.cjs');

const SUSPEND_N = Number(process.env.KYBERNATE_BENCH_SUSPEND_N ?? 7);
const CKPT_N = Number(process.env.KYBERNATE_BENCH_CKPT_N ?? 5);
const CALL_TIMEOUT_MS = 120_000;

const EXTRA = `
export { removeContainer, runDetached, task, tasks, waitFor } from './e2e/support/ctr';
export { COUNTER, CRIU_DAEMON_ENV, counterPast, criuMissing } from './e2e/support/checkpoint';
export { daemonOptions, hostSleepMissing, prepare, startCuda, tmp as opsTmp } from './e2e/support/operations';
export { AgentClient } from '../src/agent-api/client';
export { ShimClient } from '../src/shim-client/client';
export { CONTROL_SERVICE } from '../src/shim-client/control';
export { kybernate } from '../src/gen/proto';
`;

const HEADER = `Operations through the kybernate agent next to the stock path, timed in the same run; medians over
rounds interleaved (the order rotates each round), 1 warm-up round per path not counted. Wall time of:
  suspend, resume   agent:  AgentClient.Suspend/Resume (gRPC on the agent's socket, one connection reused;
                            the agent looks the workload up, then calls the shim's Control service)
                    direct: the shim's Control.Suspend/Resume (ShimClient, ttrpc, one connection reused)
                    on a container with 2 CUDA processes on the fake libcuda; "in the shim": the
                    duration_ms the shim reports for its own work, the rest is the path to it
  checkpoint        agent:  Checkpoint{exit} into the agent's snapshot dir (returns with the task deleted)
                    ctr:    ctr container checkpoint --task --rw (images and rw layer into the content store)
                    runc:   runc checkpoint --image-path DIR (plain runc, OCI bundle of the same image/command)
  restore           agent:  Restore from the snapshot dir (returns with the task running)
                    ctr:    ctr container restore --live --rw
                    runc:   runc restore -d --image-path DIR, same bundle
Every restore is checked afterwards (not timed): the counter goes on with the token it had.`;

/** Same token, counting past where it was: the restored process is the checkpointed one. */
async function verifyCounter(h, pid, before, what) {
  const after = await h.counterPast(pid, before.n, `${what}'s counter`);
  if (after.token !== before.token) throw new Error(`${what}: restored counter has token ${after.token}, not ${before.token}`);
}

// --- 1. suspend/resume ---

async function suspendPart(h, v, base, cleanup) {
  const opts = h.daemonOptions(v);
  const cd = await h.startContainerd(v, { namespace: 'kybernate-bench-agent', ...opts });
  const stopCd = cleanup.add(`containerd ${v}`, async () => { await cd.stop(); removeNamespaceCgroups(cd.namespace); });
  let client;
  let shim;
  let stopAgent;
  try {
    const e = opts.env;
    // The nvidia-smi stand-in (first on the daemon's PATH) and what it reads, as the agent tests give it.
    const agent = await startAgent({ cd, dir: fs.mkdtempSync(path.join(base, 'agent-')),
      env: { PATH: e.PATH, FAKE_CUDA_MARKER: e.FAKE_CUDA_MARKER, FAKE_CUDA_STATE_DIR: e.FAKE_CUDA_STATE_DIR } });
    stopAgent = cleanup.add(`agent of containerd ${v}`, () => agent.stop());
    const id = 'bench-agent-cuda';
    const pids = await h.startCuda(cd, h.SHIM_RUNTIME, id);
    client = new h.AgentClient({ address: agent.socket, timeoutMs: CALL_TIMEOUT_MS });
    shim = await h.ShimClient.connect(cd.state, cd.namespace, id);
    const C = h.kybernate.shim.v1;
    const ref = { namespace: cd.namespace, id };
    const direct = (method, Req, Res, msg) => shim.request(h.CONTROL_SERVICE, method, Req, Res, msg, { timeoutMs: CALL_TIMEOUT_MS });
    const paths = {
      // Each as { pids moved, the shim's own duration_ms }.
      agent: {
        suspend: async () => { const r = await client.suspend(ref); return { pids: r.cudaPids, inShim: r.durationMs }; },
        resume: async () => { const r = await client.resume(ref); return { pids: r.cudaPids, inShim: r.durationMs }; },
      },
      direct: {
        suspend: async () => { const r = await direct('Suspend', C.SuspendRequest, C.SuspendResponse, { id, lockTimeoutMs: 0 }); return { pids: r.pids, inShim: r.durationMs }; },
        resume: async () => { const r = await direct('Resume', C.ResumeRequest, C.ResumeResponse, { id }); return { pids: r.pids, inShim: r.durationMs }; },
      },
    };
    const res = Object.fromEntries(Object.keys(paths).map((k) => [k, { suspend: [], resume: [], suspendShim: [], resumeShim: [] }]));
    const once = async (name, record) => {
      for (const op of ['suspend', 'resume']) {
        const t = await timed(paths[name][op]);
        // An operation that moved no CUDA process would time nothing worth comparing.
        const moved = t.value.pids?.length ?? 0;
        if (moved !== pids.length) throw new Error(`${name} ${op} moved ${moved} CUDA processes, not ${pids.length}`);
        if (record) {
          res[name][op].push(t.ms);
          res[name][`${op}Shim`].push(t.value.inShim ?? 0);
        }
      }
    };
    for (const name of Object.keys(paths)) await once(name, false);
    for (let i = 0; i < SUSPEND_N; i++) {
      for (const name of i % 2 === 0 ? ['agent', 'direct'] : ['direct', 'agent']) await once(name, true);
      process.stdout.write('.');
    }
    process.stdout.write('\n');
    return res;
  } finally {
    client?.close();
    shim?.close();
    await stopAgent?.();
    await stopCd();
  }
}

function printSuspend(res) {
  const rows = [['', 'agent', 'direct', 'agent-direct', 'agent/direct']];
  for (const op of ['suspend', 'resume']) {
    const a = median(res.agent[op]);
    const d = median(res.direct[op]);
    rows.push([op, ms(a), ms(d), diff(a, d), ratio(a, d)]);
    const [ai, di] = [median(res.agent[`${op}Shim`]), median(res.direct[`${op}Shim`])];
    rows.push(['  in the shim', ms(ai), ms(di), diff(ai, di), '']);
  }
  const sum = (name) => median(res[name].suspend.map((x, i) => x + res[name].resume[i]));
  rows.push(['suspend+resume', ms(sum('agent')), ms(sum('direct')), diff(sum('agent'), sum('direct')), ratio(sum('agent'), sum('direct'))]);
  console.log(table(rows));
  const worst = Math.max(...['suspend', 'resume'].map((op) => median(res.agent[op]) - median(res.direct[op])));
  console.log(`  target: the agent adds at most +5 ms per operation: ${worst <= 5 ? 'met' : 'MISSED'} (worst ${diff(worst, 0)})`);
}

// --- 2. checkpoint/restore ---

async function checkpointPart(h, v, base, cleanup, runc) {
  const xdg = fs.mkdtempSync(path.join(base, 'xdg-'));
  const cd = await h.startContainerd(v, { namespace: 'kybernate-bench-agent-ckpt', env: { ...h.CRIU_DAEMON_ENV, XDG_RUNTIME_DIR: xdg } });
  const stopCd = cleanup.add(`containerd ${v} (checkpoint)`, async () => { await cd.stop(); removeNamespaceCgroups(cd.namespace); });
  let client;
  let stopAgent;
  try {
    const agent = await startAgent({ cd, dir: fs.mkdtempSync(path.join(base, 'agent-')) });
    stopAgent = cleanup.add(`agent of containerd ${v} (checkpoint)`, () => agent.stop());
    client = new h.AgentClient({ address: agent.socket, timeoutMs: CALL_TIMEOUT_MS });
    const ns = cd.namespace;
    // runc's image directories beside the agent's snapshot directory (the same filesystem).
    const images = fs.mkdtempSync(path.join(base, 'runc-images-'));
    const rounds = {
      async agent(i) {
        const id = `bench-agent-${i}`;
        let snapshot;
        try {
          const { pid } = await h.runDetached(cd, h.SHIM_RUNTIME, id, h.COUNTER);
          const before = await h.counterPast(pid, 1);
          const ck = await timed(() => client.checkpoint({ namespace: ns, id, exit: true }));
          snapshot = ck.value.snapshot?.id;
          if (!snapshot) throw new Error(`agent checkpoint of ${id} returned no snapshot`);
          const rs = await timed(() => client.restore({ namespace: ns, id }));
          const t = await h.task(cd, id);
          if (t?.status !== 'RUNNING') throw new Error(`agent: ${id} is ${t?.status ?? 'without a task'} after restore`);
          await verifyCounter(h, t.pid, before, `agent: ${id}`);
          return { checkpoint: ck.ms, restore: rs.ms, steps: { checkpoint: ck.value.steps, restore: rs.value.steps } };
        } finally {
          await h.removeContainer(cd, id);
          if (snapshot) await client.deleteSnapshot({ snapshot }).catch(() => undefined);
        }
      },
      async ctr(i) {
        const id = `bench-ctr-${i}`;
        const ref = `kybernate.bench/agent/${id}:1`;
        try {
          const { pid } = await h.runDetached(cd, h.SHIM_RUNTIME, id, h.COUNTER);
          const before = await h.counterPast(pid, 1);
          const ck = await timed(() => cd.ctrOk(['containers', 'checkpoint', '--task', '--rw', id, ref]));
          await h.removeContainer(cd, id); // the task and the container, as checkpoint.cjs does (not timed)
          const rs = await timed(() => cd.ctrOk(['containers', 'restore', '--live', '--rw', id, ref]));
          const t = await h.task(cd, id);
          if (t?.status !== 'RUNNING') throw new Error(`ctr: ${id} is ${t?.status ?? 'without a task'} after restore`);
          await verifyCounter(h, t.pid, before, `ctr: ${id}`);
          return { checkpoint: ck.ms, restore: rs.ms };
        } finally {
          await h.removeContainer(cd, id);
          await cd.ctr(['images', 'rm', ref]);
        }
      },
      async runc(i) {
        const id = `bench-runc-${v.replace('.', '')}-${i}`;
        const dir = path.join(images, id);
        try {
          // The bundle's rootfs is shared by the rounds: the last round's counter file must not pass for this one's.
          fs.rmSync(path.join(runc.bundle, 'rootfs', 'tmp', 'n'), { force: true });
          await runc.run(id);
          const before = await h.counterPast(runc.pid(id), 1);
          const ck = await timed(() => runc.checkpoint(id, dir));
          const rs = await timed(() => runc.restore(id, dir));
          const status = await runc.status(id);
          if (status !== 'running') throw new Error(`runc: ${id} is ${status} after restore`);
          await verifyCounter(h, runc.pid(id), before, `runc: ${id}`);
          return { checkpoint: ck.ms, restore: rs.ms };
        } finally {
          await runc.remove(id);
          fs.rmSync(dir, { recursive: true, force: true });
        }
      },
    };
    const kinds = Object.keys(rounds);
    const res = Object.fromEntries(kinds.map((k) => [k, { checkpoint: [], restore: [] }]));
    res.steps = { checkpoint: {}, restore: {} }; // the agent's own steps: name → durations
    for (const k of kinds) await rounds[k]('warm');
    for (let i = 0; i < CKPT_N; i++) {
      for (const k of [...kinds.slice(i % kinds.length), ...kinds.slice(0, i % kinds.length)]) {
        const r = await rounds[k](i);
        res[k].checkpoint.push(r.checkpoint);
        res[k].restore.push(r.restore);
        for (const [op, steps] of Object.entries(r.steps ?? {})) {
          for (const st of steps ?? []) (res.steps[op][st.name] ??= []).push(st.durationMs ?? 0);
        }
      }
      process.stdout.write('.');
    }
    process.stdout.write('\n');
    return res;
  } finally {
    client?.close();
    await stopAgent?.();
    await stopCd();
  }
}

function printCheckpoint(res) {
  const rows = [['', 'agent', 'ctr', 'runc', 'agent/runc', 'agent/ctr']];
  for (const op of ['checkpoint', 'restore']) {
    const [a, c, r] = ['agent', 'ctr', 'runc'].map((k) => median(res[k][op]));
    rows.push([op, ms(a), ms(c), ms(r), ratio(a, r), ratio(a, c)]);
  }
  console.log(table(rows));
  for (const op of ['checkpoint', 'restore']) {
    const steps = Object.entries(res.steps[op]).map(([name, xs]) => `${name} ${ms(median(xs))}`);
    console.log(`  agent ${op} steps (its OperationResult, medians): ${steps.join(', ') || '-'}`);
  }
  const [a, c, r] = ['agent', 'ctr', 'runc'].map((k) => median(res[k].restore));
  console.log(`  target: restore through the agent at most 1.1x runc: ${a <= 1.1 * r ? 'met' : 'MISSED'} (${ratio(a, r)}); ` +
    `faster than ctr: ${a < c ? 'met' : 'MISSED'} (${ratio(a, c)})`);
}

// --- main ---

async function main(cleanup) {
  for (const [name, n] of [['KYBERNATE_BENCH_SUSPEND_N', SUSPEND_N], ['KYBERNATE_BENCH_CKPT_N', CKPT_N]]) {
    if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, not ${process.env[name]}`);
  }
  if (!fs.existsSync(AGENT_BIN)) throw new Error(`${AGENT_BIN} is not built (run make build)`);
  const h = loadHelpers(EXTRA);
  cleanup.add('the fake libcuda directory', () => fs.rmSync(h.opsTmp, { recursive: true, force: true }));
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'kyb-bench-agent-'));
  cleanup.add(base, () => fs.rmSync(base, { recursive: true, force: true }));
  const cudaMissing = h.hostSleepMissing() ?? h.prepare();
  const criuMissing = h.criuMissing();
  let runc;
  if (!criuMissing) {
    runc = new PlainRunc(path.join(base, 'runc'), h.CRIU_DAEMON_ENV);
    cleanup.add('plain runc containers', () => runc.destroy());
    await runc.prepare(h.TEST_IMAGE_TAR, h.COUNTER);
  }
  console.log(HEADER);
  const wanted = process.env.KYBERNATE_BENCH_VERSIONS?.split(',').map((s) => s.trim());
  let ran = 0;
  for (const v of h.ALL_VERSIONS) {
    if (wanted && !wanted.includes(v)) continue;
    const missing = h.missingReason(v);
    if (missing) {
      console.log(`\ncontainerd ${v}: skipped: ${missing}`);
      continue;
    }
    ran++;
    if (cudaMissing) {
      console.log(`\ncontainerd ${v}: suspend/resume skipped: ${cudaMissing}`);
    } else {
      console.log(`\ncontainerd ${v}: suspend/resume of a CUDA container (fake libcuda), ${SUSPEND_N} rounds per path`);
      printSuspend(await suspendPart(h, v, base, cleanup));
    }
    if (criuMissing) {
      console.log(`\ncontainerd ${v}: checkpoint/restore skipped: ${criuMissing}`);
    } else {
      console.log(`\ncontainerd ${v}: checkpoint/restore of a busybox counter, ${CKPT_N} rounds per path`);
      printCheckpoint(await checkpointPart(h, v, base, cleanup, runc));
    }
  }
  if (ran === 0) throw new Error('no containerd version available to benchmark');
}

runBench(main);
