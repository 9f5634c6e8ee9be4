#!/usr/bin/env node
// Wake latency through the activator (make bench): `kybernate demo --json --rounds N` puts its HTTP workload
// to sleep (checkpoint with exit) and wakes it with a request N times; each wake is split into the steps the
// activator timed. Printed next to the bare restore it contains (the agent's Restore call, measured in the
// same wake): what the activator adds is the client's wait minus that call (target ≤ 50 ms).
// Suspend needs CUDA processes: its wake is measured by the GPU suite (test/gpu), not here.
'use strict';

const { execFile } = require('node:child_process');
const path = require('node:path');
const { promisify } = require('node:util');

const exec = promisify(execFile);
const REPO = path.resolve(__dirname, '..', '..');
const ROUNDS = Number(process.env.KYB_BENCH_WAKE_ROUNDS || 5);

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const step = (wake, name) => wake.steps.filter((s) => s.name === name).reduce((a, s) => a + s.ms, 0);

async function main() {
  if (process.getuid() !== 0) {
    console.log('wake bench: skipped (needs root)');
    return 0;
  }
  console.log(`\n== wake through the activator: ${ROUNDS} rounds of checkpoint (exit) → request → restore ==`);
  let out;
  try {
    ({ stdout: out } = await exec(process.execPath, [path.join(REPO, 'dist', 'kybernate.cjs'), 'demo', '--json', '--rounds', String(ROUNDS), '--idle', '1'],
      { timeout: 600_000, maxBuffer: 16 << 20 }));
  } catch (err) {
    console.error(`wake bench: kybernate demo failed: ${err.stderr || err.message}`);
    return 1;
  }
  const res = JSON.parse(out);
  const rounds = res.rounds.filter((r) => r.wake && r.wake.ok);
  if (rounds.length === 0) {
    console.error('wake bench: no successful wake');
    return 1;
  }
  const col = (f) => median(rounds.map(f));
  const client = col((r) => r.clientMs);
  const restore = col((r) => step(r.wake, 'restore'));
  const rows = [
    ['client: request → answer (waking)', client],
    ['  activator wake (first held request → probe passed)', col((r) => r.wake.ms)],
    ['    agent Get (state)', col((r) => step(r.wake, 'agent-get'))],
    ['    agent Restore (the bare restore)', restore],
    ...[...new Set(rounds.flatMap((r) => r.wake.steps.map((s) => s.name)).filter((n) => n.startsWith('restore/')))]
      .map((n) => [`      ${n.slice('restore/'.length)}`, col((r) => step(r.wake, n))]),
    ['    readiness probe', col((r) => step(r.wake, 'probe'))],
    ['  sleep (drain + agent Checkpoint --exit)', col((r) => r.sleepMs)],
  ];
  for (const [name, ms] of rows) console.log(`  ${name.padEnd(56)} ${ms.toFixed(1).padStart(9)} ms`);
  const added = client - restore;
  console.log(`  activator added to the wake (client − bare restore): ${added.toFixed(1)} ms  (target ≤ 50 ms: ${added <= 50 ? 'met' : 'MISSED'});` +
    ` wake / bare restore ${(client / restore).toFixed(3)}x  (medians of ${rounds.length})`);
  return 0;
}

main().then((code) => { process.exitCode = code; }, (err) => { console.error(err); process.exitCode = 1; });
