// The GPU suite's driver (test/gpu/run.sh runs its esbuild bundle): for each size, a workload holding
// that much device memory goes through suspend/resume via the addon and through the same driver calls
// from raw-checkpoint.c, interleaved round by round; device memory is verified after every round, and
// nvidia-smi is read while the process is checkpointed. Prints a table and writes results.json and
// RESULTS.md into --out. Exits 1 if any check failed.
import { execFile, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { promisify } from 'node:util';
import * as cuda from '../../src/native/cuda';

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i].replace(/^--/, ''), process.argv[i + 1]);
const workloadBin = args.get('workload')!;
const rawBin = args.get('raw')!;
const sizes = (args.get('sizes') ?? '1,4,8').split(',').map(Number);
const rounds = Number(args.get('rounds') ?? '3');
const outDir = args.get('out') ?? '.';

const failures: string[] = [];
const check = (ok: boolean, what: string) => {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failures.push(what);
};

/** A child speaking one line per request. */
class LineChild {
  readonly proc: ChildProcessWithoutNullStreams;
  private lines: string[] = [];
  private waiters: Array<(l: string) => void> = [];
  constructor(file: string, argv: string[]) {
    this.proc = spawn(file, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc.stderr.on('data', (d: Buffer) => process.stderr.write(`[${path.basename(file)}] ${d}`));
    readline.createInterface({ input: this.proc.stdout }).on('line', (l) => {
      const w = this.waiters.shift();
      if (w) w(l);
      else this.lines.push(l);
    });
    this.proc.on('exit', (code) => {
      for (const w of this.waiters.splice(0)) w(`exit ${code}`);
    });
  }
  next(): Promise<string> {
    const l = this.lines.shift();
    return l !== undefined ? Promise.resolve(l) : new Promise((r) => this.waiters.push(r));
  }
  async ask(line: string): Promise<string> {
    this.proc.stdin.write(`${line}\n`);
    return this.next();
  }
}

async function smi(query: string[]): Promise<string> {
  try {
    return (await promisify(execFile)('nvidia-smi', [...query, '--format=csv,noheader,nounits'])).stdout.trim();
  } catch (err) {
    return `nvidia-smi failed: ${(err as Error).message}`;
  }
}
const gpuUsedMiB = async () => Number((await smi(['--query-gpu=memory.used'])).split('\n')[0]);
const appMiB = async (pid: number) => {
  const row = (await smi(['--query-compute-apps=pid,used_memory'])).split('\n').find((l) => l.split(',')[0].trim() === String(pid));
  return row === undefined ? 0 : Number(row.split(',')[1]);
};

type Steps = { lockMs: number; checkpointMs: number; restoreMs: number; unlockMs: number };
/** Addon rounds also carry the time each step spent on the addon's call thread (frozen check + driver). */
type AddonSteps = Steps & { native: Steps };
const STEPS = ['lockMs', 'checkpointMs', 'restoreMs', 'unlockMs'] as const;

async function freezeV2(pid: number, frozen: boolean, dir: string): Promise<void> {
  if (frozen) {
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'cgroup.procs'), String(pid));
  }
  fs.writeFileSync(path.join(dir, 'cgroup.freeze'), frozen ? '1' : '0');
  // cgroup.events reports the state once every task has reached it.
  for (let i = 0; i < 100 && !fs.readFileSync(path.join(dir, 'cgroup.events'), 'utf8').includes(`frozen ${frozen ? 1 : 0}`); i++)
    await new Promise((r) => setTimeout(r, 10));
}

async function guards(w: LineChild, pid: number, expected: string, gpus: cuda.GpuInfo[]): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  // This node process is itself a CUDA client (listGpus ran cuInit), so ask about a plain child.
  const plain = spawn('sleep', ['30'], { stdio: 'ignore' });
  const nonCuda = await cuda.getState(plain.pid!).then((s) => s, (e: cuda.CudaError) => e.code);
  plain.kill('SIGKILL');
  out.getStateOfNonCudaProcess = nonCuda;
  console.log(`info getState(non-CUDA pid) → ${nonCuda}`);
  const cg = '/sys/fs/cgroup/kyb-gpu-suite';
  if (!fs.existsSync('/sys/fs/cgroup/cgroup.controllers')) {
    console.log('skip freezer guard: no cgroup v2 at /sys/fs/cgroup');
    return out;
  }
  const home = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').find((l) => l.startsWith('0::'))!.slice(3);
  try {
    await freezeV2(pid, true, cg);
    const t0 = performance.now();
    const err = await cuda.lock(pid, 5000).then(() => 'locked!', (e: cuda.CudaError) => e.code);
    out.lockWhileFrozen = { result: err, ms: performance.now() - t0 };
    check(err === 'KYB_ERR_CUDA_FROZEN', `lock on a frozen process is refused at once (${err}, ${(performance.now() - t0).toFixed(1)} ms)`);
    await freezeV2(pid, false, cg);
    // The documented safe order: suspend, freeze, (dump would go here), thaw, resume.
    await cuda.suspend(pid);
    await freezeV2(pid, true, cg);
    out.gpuMiBWhileSuspendedAndFrozen = await appMiB(pid);
    await freezeV2(pid, false, cg);
    await cuda.resume(pid);
    const v = await w.ask('verify');
    check(v === expected, `suspend → freeze → thaw → resume keeps memory intact (${v})`);
  } finally {
    await freezeV2(pid, false, cg).catch(() => undefined);
    fs.writeFileSync(`/sys/fs/cgroup${home === '/' ? '' : home}/cgroup.procs`, String(pid));
    fs.rmdirSync(cg);
  }
  // Restore with an identity GPU map (the remap path, on the one GPU there is).
  const pairs: cuda.GpuPair[] = gpus.map((g) => [g.uuid, g.uuid] as const);
  await cuda.suspend(pid);
  const remap = await cuda.resume(pid, { gpuPairs: pairs }).then(() => 'ok', (e: cuda.CudaError) => `${e.code}: ${e.message}`);
  if (remap !== 'ok') await cuda.resume(pid);
  out.identityRemap = remap;
  check(remap === 'ok', `restore with gpuPairs ${JSON.stringify(pairs)} (${remap})`);
  const v = await w.ask('verify');
  check(v === expected, `memory intact after the remap round (${v})`);
  return out;
}

async function main(): Promise<void> {
  const version = await cuda.cudaDriverVersion();
  const gpus = await cuda.listGpus();
  console.log(`driver API ${version}; GPUs: ${JSON.stringify(gpus)}`);
  const results: Array<Record<string, unknown>> = [];
  const summary: Array<{ gib: number; addon: AddonSteps[]; raw: Steps[] }> = [];
  let guardInfo: Record<string, unknown> = {};
  for (const gib of sizes) {
    const w = new LineChild(workloadBin, [String(gib)]);
    const ready = (await w.next()).split(' ');
    if (ready[0] !== 'ready') throw new Error(`workload did not start: ${ready.join(' ')}`);
    const pid = Number(ready[1]);
    const bytes = Number(ready[2]);
    const expected = await w.ask('verify');
    check(expected.startsWith('verify 0 '), `${gib} GiB workload pid ${pid} filled (${expected})`);
    check((await cuda.getState(pid)) === 'running', `${gib} GiB: getState → running`);
    const tid = await cuda.getRestoreThreadId(pid);
    console.log(`info restore thread id ${tid} (pid ${pid})`);
    const raw = new LineChild(rawBin, [String(pid)]);
    check((await raw.next()) === 'ready', 'raw-checkpoint initialised');
    const addonRuns: AddonSteps[] = [];
    const rawRuns: Steps[] = [];
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? ['addon', 'raw'] : ['raw', 'addon'];
      for (const which of order) {
        // Both paths get the same checks while checkpointed (state + nvidia-smi), so the time the
        // image spends in host memory before restore is alike.
        const before = await gpuUsedMiB();
        let steps: Steps;
        const checked = { state: '', during: 0, appDuring: 0 };
        const whileCheckpointed = async () => {
          checked.state = await cuda.getState(pid);
          checked.during = await gpuUsedMiB();
          checked.appDuring = await appMiB(pid);
        };
        if (which === 'addon') {
          const s = await cuda.suspend(pid, { lockTimeoutMs: 10_000 });
          await whileCheckpointed();
          const res = await cuda.resume(pid);
          const native = { lockMs: s.lockNativeMs, checkpointMs: s.checkpointNativeMs, restoreMs: res.restoreNativeMs, unlockMs: res.unlockNativeMs };
          const a = { lockMs: s.lockMs, checkpointMs: s.checkpointMs, restoreMs: res.restoreMs, unlockMs: res.unlockMs, native };
          addonRuns.push(a);
          steps = a;
        } else {
          const s = JSON.parse(await raw.ask('suspend')) as Partial<Steps> & { error?: string };
          if (s.error !== undefined) throw new Error(`raw-checkpoint: ${s.error}`);
          await whileCheckpointed();
          const res = JSON.parse(await raw.ask('resume')) as Partial<Steps> & { error?: string };
          if (res.error !== undefined) throw new Error(`raw-checkpoint: ${res.error}`);
          steps = { ...s, ...res } as Steps;
          rawRuns.push(steps);
        }
        check(checked.state === 'checkpointed', `${gib} GiB round ${r + 1} ${which}: state while suspended = ${checked.state}`);
        check(checked.appDuring === 0 && before - checked.during >= gib * 1024 * 0.9,
          `${gib} GiB round ${r + 1} ${which}: GPU memory freed while checkpointed (GPU used ${before} → ${checked.during} MiB, process ${checked.appDuring} MiB)`);
        results.push({ gib, round: r + 1, via: which, ...steps, gpuUsedBeforeMiB: before, gpuUsedCheckpointedMiB: checked.during });
        const v = await w.ask('verify');
        check(v === expected, `${gib} GiB round ${r + 1} ${which}: memory intact (${v})`);
      }
    }
    raw.proc.stdin.end();
    if (gib === sizes[0]) guardInfo = await guards(w, pid, expected, gpus);
    await w.ask('quit');
    summary.push({ gib: bytes / 2 ** 30, addon: addonRuns, raw: rawRuns });
  }

  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const min = (xs: number[]) => Math.min(...xs);
  const f = (x: number, d = 2) => x.toFixed(d);
  const rows: string[] = [];
  rows.push('| size | step | addon mean ms | raw C mean ms | addon/raw (means) | addon/raw (minima) | addon wall − native ms | addon GB/s | raw GB/s |');
  rows.push('|---|---|---|---|---|---|---|---|---|');
  let addonSum = 0;
  let rawSum = 0;
  let overheadSum = 0;
  for (const s of summary) {
    for (const step of STEPS) {
      const a = s.addon.map((x) => x[step]);
      const r = s.raw.map((x) => x[step]);
      const over = s.addon.map((x) => x[step] - x.native[step]);
      const transfer = step === 'checkpointMs' || step === 'restoreMs';
      const gbs = (ms: number) => (transfer ? f((s.gib * 2 ** 30) / 1e9 / (ms / 1e3)) : '');
      if (transfer) {
        addonSum += mean(a);
        rawSum += mean(r);
        overheadSum += mean(over);
      }
      rows.push(`| ${s.gib} GiB | ${step.replace('Ms', '')} | ${f(mean(a))} | ${f(mean(r))} | ${f(mean(a) / mean(r), 3)} | ${f(min(a) / min(r), 3)} | ${f(mean(over), 3)} | ${gbs(mean(a))} | ${gbs(mean(r))} |`);
    }
  }
  const overall = addonSum / rawSum;
  const overhead = overheadSum / rawSum;
  const table = [
    `${gpus.map((g) => g.name).join(', ')}, driver API ${version}, ${rounds} rounds per size (addon and raw C alternate which goes first)`,
    '',
    rows.join('\n'),
    '',
    `checkpoint+restore over all sizes: addon/raw (means) = ${f(overall, 4)}; addon wall − native = ${f(overheadSum, 2)} ms of ${f(rawSum, 0)} ms raw = ${f(overhead * 100, 3)}% (target <= 2%)`,
  ].join('\n');
  console.log(`\n${table}`);
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(path.join(outDir, 'results.json'), JSON.stringify({ version, gpus, rounds, results, guards: guardInfo, overall, overhead, failures }, null, 2));
  fs.writeFileSync(path.join(outDir, 'table.md'), `${table}\n`);
  if (failures.length > 0) {
    console.log(`\n${failures.length} check(s) FAILED:\n${failures.join('\n')}`);
    process.exit(1);
  }
  console.log('\nall checks passed');
  process.exit(0);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
