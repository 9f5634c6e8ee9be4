// The GPU container suite (test/gpu/run.sh runs it on the GPU machine, bundled as .deps/gpu/containers.cjs):
// a CUDA container and a PyTorch HTTP server container, each run under both paths side by side with their
// rounds interleaved:
//   ours:  containerd 2.1 + the kybernate shim: Tasks.Checkpoint (exit) → Tasks.Create{criu_image_path} +
//          Start, and suspend/resume in place both as Control ttrpc calls from this process (the node
//          agent's way) and through the `kybernate suspend|resume` CLI;
//   stock: the same spec under runc alone: raw driver lock+checkpoint, `runc checkpoint`, `runc restore`,
//          raw restore+unlock; raw suspend + cgroup freeze / thaw + raw resume in place;
//   agent: kybernate-agent beside containerd, and a third container of each workload suspended/resumed and
//          checkpointed/restored through it (agent-path.ts; --agent 0 leaves it out), in the same rounds;
//   tiers: first of all, with the agent's config file adding a disk tier on local disk, one CUDA container of
//          --tier-gib GiB checkpointed into ram, restored, checkpointed again, moved to disk and restored from
//          there (tiers-path.ts: restore-from-ram / move-to-disk / restore-from-disk rows; --tiers 0 leaves it out);
//   activator: after those, kybernate-activator in front of the agent's torch container: idle → suspend, then
//          checkpoint, a request wakes it (activator-path.ts; --activator 0 leaves it out);
// with the answers checked after every restore/resume against those computed before the first checkpoint.
// Writes container-results.json and container-table.md into --out, logs into --logs, and prints the table.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { ShimClient } from '../../src/shim-client/client';
import { kybernate } from '../../src/gen/proto';
import { daemonConfig } from '../harness/config';
import { ActivatorPath } from './activator-path';
import { AgentPath, type AgentCtx } from './agent-path';
import { Ctd } from './ctd';
import { buildGpuSpec, hostBinds, prepareRootfs, probeHost, type BindPolicy, type HostProbe } from './gpu-spec';
import { TiersPath, chooseDiskDir, writeTierConfig } from './tiers-path';
import { RawDriver, StockRunc, cgroupDirOf, dirBytes, exec, gpuUsedMiB, setFrozen } from './stock';
import { FILES_DIR, cudaWorkload, torchWorkload, type Workload } from './workloads';
import { formatTable, type Report, type Sample } from './report';
import { createBreakdown, manifestSteps, restoredSteps } from './shim-log';

interface Args {
  work: string; out: string; logs: string; bin: string; node: string; cli: string; workload: string; raw: string; server: string;
  gib: number; rounds: number; port: number; only: string[];
  /** Suspend/resume rounds (--suspend 0 skips them); restore rounds through a warm group shim (--group 0 skips); the agent path (--agent 0 skips). */
  suspend: boolean; group: boolean; agent: boolean;
  /** The activator rounds in front of the agent's torch container (--activator 0 skips). */
  activator: boolean;
  /** The snapshot-tier round of the CUDA workload (--tiers 0 skips; needs the agent) and its container's GiB of device memory. */
  tiers: boolean; tierGib: number;
}

function parseArgs(argv: string[]): Args {
  const get = (name: string, def?: string): string => {
    const i = argv.indexOf(`--${name}`);
    const v = i >= 0 ? argv[i + 1] : def;
    if (v === undefined) throw new Error(`containers: --${name} is required`);
    return v;
  };
  return {
    work: get('work'), out: get('out'), logs: get('logs'), bin: get('bin'), node: get('node'), cli: get('cli'), workload: get('workload'),
    raw: get('raw'), server: get('server'), gib: Number(get('gib', '4')), rounds: Number(get('rounds', '2')),
    port: Number(get('port', '18471')), only: get('only', 'cuda,torch').split(','),
    suspend: get('suspend', '1') !== '0', group: get('group', '1') !== '0', agent: get('agent', '1') !== '0',
    activator: get('activator', '1') !== '0', tiers: get('tiers', '1') !== '0', tierGib: Number(get('tier-gib', '16')),
  };
}

const RUNTIME = 'io.containerd.kybernate.v2';
const CONTROL = 'kybernate.shim.v1.Control';
const C = kybernate.shim.v1;
const NAMESPACE = 'kyb-gpu';
const IMAGES = '/dev/shm/kyb-gpu-images';
/** The shim's `start` puts containers with the same value of this annotation into one shim daemon. */
const GROUP_ANNOTATION = 'io.kybernate.group';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const log = (s: string): void => console.log(`containers: ${s}`);

class Suite {
  readonly report: Report;
  private containerd?: ChildProcess;
  private ctd!: Ctd;
  private readonly address: string;
  private readonly state: string;
  private readonly env: NodeJS.ProcessEnv;
  private readonly stock: StockRunc;
  private cliSuspend = false;
  private policy: BindPolicy = {};
  agent?: AgentPath;
  activator?: ActivatorPath;
  /** The agent's disk tier, when the tier round runs (removed at stop). */
  private tierDisk?: string;

  constructor(readonly a: Args, readonly probe: HostProbe) {
    this.address = path.join(a.work, 'ctd', 'containerd.sock');
    this.state = path.join(a.work, 'ctd', 'state');
    // PATH: the shim launcher, runc and the criu wrapper first (runc finds CRIU as `criu`).
    this.env = { ...process.env, PATH: `${a.bin}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}` };
    this.stock = new StockRunc(path.join(a.bin, 'runc'), path.join(a.work, 'runc-root'), this.env);
    this.report = { device: '', probe, samples: [], checks: [], notes: [] };
  }

  check(ok: boolean, what: string, detail = ''): void {
    this.report.checks.push({ ok, what, detail });
    console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}${detail ? `: ${detail}` : ''}`);
  }

  sample(s: Sample): void {
    this.report.samples.push(s);
    log(`${s.workload} ${s.path} ${s.op} round ${s.round}: ${s.ms.toFixed(1)} ms ${s.parts ? JSON.stringify(s.parts) : ''}`);
  }

  async startContainerd(): Promise<void> {
    const dir = path.join(this.a.work, 'ctd');
    fs.mkdirSync(dir, { recursive: true });
    const config = path.join(dir, 'config.toml');
    fs.writeFileSync(config, daemonConfig('2.1', { root: path.join(dir, 'root'), state: this.state, address: this.address, opt: path.join(dir, 'opt') }, 'info'));
    const logFd = fs.openSync(path.join(this.a.logs, 'containerd.log'), 'a');
    this.containerd = spawn(path.join(this.a.bin, 'containerd'), ['--config', config], { env: this.env, stdio: ['ignore', logFd, logFd] });
    this.ctd = new Ctd(this.address, NAMESPACE);
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (this.containerd.exitCode !== null) throw new Error(`containerd exited ${this.containerd.exitCode} (see containerd.log)`);
      if (fs.existsSync(this.address)) {
        try {
          await this.ctd.status('probe');
        } catch (err) {
          if (/not found/i.test((err as Error).message)) return;
        }
      }
      if (Date.now() > deadline) throw new Error('containerd not ready after 30 s (see containerd.log)');
      await sleep(100);
    }
  }

  /** kybernate-agent on this containerd, snapshots on the same tmpfs as our images; a failure skips the agent rounds only. */
  async startAgent(): Promise<void> {
    let config: string | undefined;
    if (this.wantTiers) {
      // Local disk, not /dev/shm (the ram tier is there): the snapshot and some room besides.
      const need = Math.ceil((this.a.tierGib * 1.1 + 2) * 2 ** 30);
      const d = chooseDiskDir(['/var/tmp/kyb-gpu-tiers', path.join(this.a.work, 'tiers')], need);
      if (d.dir) {
        this.tierDisk = d.dir;
        config = writeTierConfig(path.join(this.a.work, 'agent.json'), d.dir, d.freeBytes);
        log(`disk tier in ${d.dir} (${d.why})`);
      } else {
        this.check(false, 'a local disk for the agent\'s disk tier (the tier round is skipped)', d.why);
      }
    }
    const agent = new AgentPath({
      node: this.a.node, bundle: path.join(path.dirname(this.a.cli), 'kybernate-agent.cjs'), address: this.address, state: this.state,
      namespace: NAMESPACE, socket: path.join(this.a.work, 'agent.sock'), snapshotDir: path.join(IMAGES, 'agent'), env: this.env,
      logFile: path.join(this.a.logs, 'agent.log'), pidFile: path.join(this.a.work, 'agent.pid'), config,
    }, this, log);
    try {
      await agent.start();
      this.agent = agent;
    } catch (err) {
      this.check(false, 'kybernate-agent serving (the agent rounds are skipped)', (err as Error).stack ?? String(err));
      await agent.stop();
    }
  }

  private get wantTiers(): boolean {
    return this.a.tiers && this.a.agent && this.a.only.includes('cuda');
  }

  /**
   * The snapshot-tier round (tiers-path.ts): one CUDA container of --tier-gib GiB, alone on the GPU (it runs
   * before the other containers start), driven through the agent; removed after.
   */
  async tierRound(): Promise<void> {
    if (!this.wantTiers || !this.tierDisk) return;
    if (!this.agent?.serving) {
      this.check(false, 'cuda tiers: kybernate-agent serving (the tier round is skipped)');
      return;
    }
    const w = cudaWorkload(this.a.tierGib);
    const t: AgentCtx = { id: 'kyb-cuda-tiers', pid: 0, expected: '', used0: 0 };
    try {
      const t0 = performance.now();
      await this.startOurs(w, t);
      t.used0 = await gpuUsedMiB();
      log(`cuda tiers: pid ${t.pid} serving ${this.a.tierGib} GiB after ${(performance.now() - t0).toFixed(0)} ms; GPU used ${t.used0} MiB; answer ${t.expected}`);
      await new TiersPath({ socket: path.join(this.a.work, 'agent.sock'), namespace: NAMESPACE, diskDir: this.tierDisk, gib: this.a.tierGib }, this, log).run(w, t);
    } catch (err) {
      this.check(false, 'cuda tiers: the container started', (err as Error).stack ?? String(err));
    } finally {
      await this.removeOurs(t.id);
    }
  }

  async stop(): Promise<void> {
    await this.agent?.stop();
    if (this.tierDisk) fs.rmSync(this.tierDisk, { recursive: true, force: true });
    this.ctd?.close();
    if (this.containerd && this.containerd.exitCode === null) {
      this.containerd.kill('SIGTERM');
      await sleep(500);
    }
  }

  /** A bundle dir + rootfs for one container; returns the spec (in shim group `group` when given). */
  spec(w: Pick<Workload, 'args' | 'env' | 'withPython'>, id: string, group?: string): Record<string, unknown> {
    const rootfs = path.join(this.a.work, 'rootfs', id);
    const binds = [...hostBinds(this.probe, w.withPython, this.policy), { source: path.join(this.a.work, 'files'), destination: FILES_DIR, readonly: true }];
    prepareRootfs(rootfs, binds);
    const spec = buildGpuSpec({ id, rootfs, args: w.args, env: w.env, binds, probe: this.probe });
    return group ? { ...spec, annotations: { [GROUP_ANNOTATION]: group } } : spec;
  }

  /**
   * Runs the CUDA workload once (0.01 GiB, stdin at EOF: it prints "ready" and exits) under runc with each
   * way of providing the driver until one works, so that one wrong guess about this host's driver layout
   * does not cost the whole run.
   */
  async preflight(): Promise<void> {
    const policies: Array<{ name: string; policy: BindPolicy }> = [
      { name: 'trees + nested host mounts', policy: {} },
      { name: 'trees + nested host mounts + every driver library bound explicitly', policy: { explicitDriverLibs: true } },
    ];
    const w = cudaWorkload(0.01);
    w.args = w.args.filter((x) => x !== '--signal');
    for (const [i, p] of policies.entries()) {
      this.policy = p.policy;
      const id = `preflight-${i}`;
      const bundle = path.join(this.a.work, 'bundles', id);
      fs.mkdirSync(bundle, { recursive: true });
      fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(this.spec(w, id), null, 2));
      const logFile = path.join(this.a.logs, `${id}.log`);
      const r = await this.stock.runToEnd(id, bundle, logFile);
      await this.stock.remove(id);
      const out = fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : '';
      const ok = r.code === 0 && /^ready /m.test(out);
      log(`preflight (${p.name}): exit ${r.code}; ${out.trim().split('\n').slice(-3).join(' | ')}`);
      if (ok) {
        this.report.notes.push(`driver provided by: ${p.name}`);
        fs.writeFileSync(path.join(this.a.logs, 'spec-example.json'), JSON.stringify(this.spec(w, id), null, 2));
        return;
      }
    }
    throw new Error('no spec variant ran the CUDA workload in a container (see preflight-*.log)');
  }

  /** Creates and starts one of our containers (in shim group `group` when given); its answers before any checkpoint into c.expected. */
  private async startOurs(w: Workload, c: OursCtx, group?: string): Promise<void> {
    await this.ctd.createContainer(c.id, RUNTIME, this.spec(w, c.id, group));
    c.pid = await this.ctd.createTask(c.id, this.logUri(c.id, 'out'), this.logUri(c.id, 'err'));
    c.pid = await this.ctd.start(c.id) || c.pid;
    await w.ready(c.pid);
    c.expected = await w.check(c.pid);
  }

  private logUri(id: string, stream: string): string {
    return `file://${path.join(this.a.logs, `${id}.${stream}.log`)}`;
  }

  /** `kybernate suspend|resume --json`: the CLI's wall time, and the shim's own duration and steps. */
  private async cli(op: 'suspend' | 'resume', id: string): Promise<{ ms: number; shimMs?: number; steps?: Record<string, number> }> {
    const r = await exec(this.a.node, [this.a.cli, op, id, '--namespace', NAMESPACE, '--state-dir', this.state, '--json'], { env: this.env, timeoutMs: 180_000 });
    if (r.code !== 0) throw new Error(`kybernate ${op} ${id} exited ${r.code}: ${(r.stderr || r.stdout).trim().slice(-2000)}`);
    try {
      const o = JSON.parse(r.stdout) as { durationMs?: number; steps?: Array<{ step: string; pid: number; ms: number }> };
      const steps = Object.fromEntries((o.steps ?? []).map((s) => [`${s.step}${s.pid ? `@${s.pid}` : ''}`, Math.round(s.ms * 10) / 10]));
      return { ms: r.ms, shimMs: o.durationMs, steps };
    } catch {
      return { ms: r.ms };
    }
  }

  /**
   * Suspend/Resume as the node agent will make them: one ttrpc call from this already running process over
   * a connection opened beforehand (the CLI's wall time adds node's start and the dial).
   */
  private async rpc(op: 'suspend' | 'resume', id: string, shim: ShimClient): Promise<{ ms: number; shimMs: number; steps: Record<string, number> }> {
    const t0 = performance.now();
    const r = op === 'suspend'
      ? await shim.request(CONTROL, 'Suspend', C.SuspendRequest, C.SuspendResponse, { id, lockTimeoutMs: 0 }, { timeoutMs: 180_000 })
      : await shim.request(CONTROL, 'Resume', C.ResumeRequest, C.ResumeResponse, { id }, { timeoutMs: 180_000 });
    const ms = performance.now() - t0;
    const steps = Object.fromEntries((r.steps ?? []).map((s) => [`${s.name ?? ''}${s.pid ? `@${s.pid}` : ''}`, Math.round((s.durationMs ?? 0) * 10) / 10]));
    return { ms, shimMs: r.durationMs ?? 0, steps };
  }

  /** What shim-log.ts needs to add the shim's own times to the samples. */
  private get logs() {
    return { report: this.report, containerdLog: path.join(this.a.logs, 'containerd.log'), address: this.address, namespace: NAMESPACE, log };
  }

  async detectCli(): Promise<void> {
    const r = await exec(this.a.node, [this.a.cli, '--help'], { env: this.env });
    this.cliSuspend = /\bsuspend\b/.test(r.stdout + r.stderr) && /\bresume\b/.test(r.stdout + r.stderr);
    if (!this.cliSuspend) {
      this.report.notes.push('kybernate CLI has no suspend/resume commands in this build: suspend-in-place through our path not run');
      return;
    }
    // What the CLI's wall time holds besides the shim's work: node starting and loading the bundle.
    const starts: number[] = [];
    for (let i = 0; i < 3; i++) starts.push((await exec(this.a.node, [this.a.cli, 'version'], { env: this.env })).ms);
    this.report.notes.push(`\`kybernate version\` (node start + bundle load, no shim call) takes ${starts.map((x) => x.toFixed(0)).join('/')} ms`);
  }

  /**
   * Both containers of one workload run side by side and their rounds interleave (odd rounds ours first,
   * even rounds stock first), so drift of the driver and the page cache over the minutes of a run hits
   * both paths alike. Each path's GPU memory check compares against the usage with both running.
   */
  async pair(w: Workload): Promise<void> {
    const o: OursCtx = { id: `kyb-${w.name}`, pid: 0, expected: '', used0: 0 };
    const s: StockCtx = { id: `runc-${w.name}`, bundle: path.join(this.a.work, 'bundles', `runc-${w.name}`), logFile: path.join(this.a.logs, `runc-${w.name}.log`), pid: 0, expected: '', used0: 0 };
    // The node agent's deployment: one long-lived shim per group, kept alive by a container without GPU
    // work, so that a restore's `start` finds the group's daemon serving.
    const group = `kyb-gpu-${w.name}`;
    const keeper = `kyb-${w.name}-keeper`;
    const g: OursCtx | undefined = this.a.group ? { id: `kyb-${w.name}-g`, pid: 0, expected: '', used0: 0 } : undefined;
    // The agent's container: its own shim, like o; the agent drives it between the other paths' steps.
    let ag: AgentCtx | undefined = this.agent?.serving ? { id: `kyb-${w.name}-agent`, pid: 0, expected: '', used0: 0 } : undefined;
    let stockStarted = false;
    try {
      await this.startOurs(w, o);
      if (g) {
        await this.ctd.createContainer(keeper, RUNTIME, this.spec({ args: ['/usr/bin/sleep', 'infinity'], env: [], withPython: false }, keeper, group));
        await this.ctd.createTask(keeper, this.logUri(keeper, 'out'), this.logUri(keeper, 'err'));
        await this.ctd.start(keeper);
        await this.startOurs(w, g, group);
        this.check(g.expected === o.expected, `${w.name}: the group shim's and the own shim's containers give the same answers`);
      }
      if (ag) {
        try {
          await this.startOurs(w, ag);
          this.check(ag.expected === o.expected, `${w.name}: the agent's and the suite's kybernate containers give the same answers`);
        } catch (err) {
          this.check(false, `${w.name}: the agent's container started (its rounds are skipped)`, (err as Error).stack ?? String(err));
          await this.removeOurs(ag.id);
          ag = undefined;
        }
      }
      fs.mkdirSync(s.bundle, { recursive: true });
      fs.writeFileSync(path.join(s.bundle, 'config.json'), JSON.stringify(this.spec(w, s.id), null, 2));
      stockStarted = true;
      await this.stock.run(s.id, s.bundle, s.logFile);
      s.pid = await this.stock.pid(s.id);
      await w.ready(s.pid);
      s.expected = await w.check(s.pid);
      this.check(s.expected === o.expected, `${w.name}: runc and kybernate containers give the same answers`);
      o.used0 = s.used0 = await gpuUsedMiB();
      if (g) g.used0 = o.used0;
      if (ag) ag.used0 = o.used0;
      log(`${w.name}: ours pid ${o.pid}, group pid ${g?.pid ?? '-'}, agent's pid ${ag?.pid ?? '-'}, stock pid ${s.pid} serving; GPU used ${o.used0} MiB; answer ${o.expected.slice(0, 200)}`);
      // Each round: ours, group, agent, stock (even rounds the other way round).
      for (let round = 1; round <= this.a.rounds; round++) {
        const steps = [() => this.oursCheckpointRestore(w, o, round), () => this.stockCheckpointRestore(w, s, round)];
        if (ag) steps.splice(1, 0, () => this.agent!.checkpointRestore(w, ag, round));
        if (g) steps.splice(1, 0, () => this.oursCheckpointRestore(w, g, round, 'restore-group'));
        for (const step of round % 2 ? steps : steps.reverse()) await step();
      }
      createBreakdown(this.logs, w.name, 'restore', o.id, o.id);
      if (ag) createBreakdown(this.logs, w.name, 'restore-agent', ag.id, ag.id);
      if (g) {
        const boots = createBreakdown(this.logs, w.name, 'restore-group', g.id, group);
        this.check(boots === 0, `${w.name}: restores into the warm group shim started no new shim daemon`, `${boots} started`);
      }
      const restored = restoredSteps(this.logs.containerdLog, o.id);
      if (restored.length !== this.a.rounds) log(`${o.id}: ${restored.length} 'restored' lines in containerd.log for ${this.a.rounds} restores`);
      for (const [i, steps] of restored.entries()) {
        const ms = (steps['runc-restore'] ?? 0) + (steps['gpu-total'] ?? 0);
        this.sample({ workload: w.name, path: 'ours', op: 'restore-shim', round: i + 1, ms, parts: steps });
      }
      if (!this.a.suspend) return;
      // Suspend in place: rpc, agent, stock, CLI (even rounds the other way round).
      const cg = cgroupDirOf(s.pid);
      const raw = new RawDriver(this.a.raw, s.pid);
      const shim = await ShimClient.connect(this.state, NAMESPACE, o.id);
      try {
        await raw.ready();
        for (let round = 1; round <= this.a.rounds; round++) {
          const rpc = (): Promise<void> => this.oursSuspendResume(w, o, round, shim);
          const cli = (): Promise<void> => (this.cliSuspend ? this.oursSuspendResume(w, o, round) : Promise.resolve());
          const steps = [rpc, () => this.agent?.suspendResume(w, ag, round), () => this.stockSuspendResume(w, s, round, raw, cg), cli];
          for (const step of round % 2 ? steps : steps.reverse()) await step();
        }
      } finally {
        shim.close();
        raw.close();
      }
    } finally {
      if (ag) {
        await this.activatorRounds(w, ag);
        this.agent?.summary(w);
        await this.removeOurs(ag.id);
      }
      await this.removeOurs(o.id);
      if (g) {
        await this.removeOurs(g.id);
        await this.removeOurs(keeper);
      }
      if (stockStarted) await this.stock.remove(s.id);
    }
  }

  /** kybernate-activator in front of the agent's container, sleeping it through the agent (activator-path.ts). */
  private async activatorRounds(w: Workload, ag: AgentCtx): Promise<void> {
    if (!this.a.activator || w.name !== 'torch' || !this.agent?.serving || ag.failed) return;
    const act = new ActivatorPath({
      node: this.a.node, bundle: path.join(path.dirname(this.a.cli), 'kybernate-activator.cjs'), agent: path.join(this.a.work, 'agent.sock'),
      namespace: NAMESPACE, dir: path.join(this.a.work, 'activator'), env: this.env, logFile: path.join(this.a.logs, 'activator.log'),
      pidFile: path.join(this.a.work, 'activator.pid'), rounds: this.a.rounds,
    }, this, log);
    this.activator = act;
    try {
      await act.run(w, ag);
    } catch (err) {
      this.check(false, `${w.name} activator rounds`, (err as Error).stack ?? String(err));
    } finally {
      await act.stop();
      this.activator = undefined;
    }
  }

  private async oursCheckpointRestore(w: Workload, o: OursCtx, round: number, op: 'restore' | 'restore-group' = 'restore'): Promise<void> {
    const images = path.join(IMAGES, `${o.id}-${round}`);
    fs.rmSync(images, { recursive: true, force: true });
    let t0 = performance.now();
    await this.ctd.checkpoint(o.id, images, true);
    const ckptMs = performance.now() - t0;
    await this.ctd.waitStopped(o.id, 30_000);
    await this.ctd.deleteTask(o.id);
    const used = await gpuUsedMiB();
    const how = op === 'restore' ? '' : ' (group shim)';
    this.sample({ workload: w.name, path: 'ours', op: op === 'restore' ? 'checkpoint' : 'checkpoint-group', round, ms: ckptMs, bytes: dirBytes(images), parts: manifestSteps(images) });
    this.check(used < o.used0 - 500, `${w.name} ours${how} round ${round}: GPU memory released after checkpoint`, `${o.used0} -> ${used} MiB`);
    t0 = performance.now();
    await this.ctd.createTask(o.id, this.logUri(o.id, 'out'), this.logUri(o.id, 'err'), images);
    const t1 = performance.now();
    o.pid = await this.ctd.start(o.id);
    const t2 = performance.now();
    this.sample({ workload: w.name, path: 'ours', op, round, ms: t2 - t0, parts: { create: t1 - t0, start: t2 - t1 } });
    const got = await w.check(o.pid);
    this.check(got === o.expected, `${w.name} ours${how} round ${round}: answers after restore`, got === o.expected ? '' : `got ${got.slice(0, 300)}`);
    fs.rmSync(images, { recursive: true, force: true });
  }

  /** One suspend + resume in place, through the Control rpc when `shim` is given, else the CLI. */
  private async oursSuspendResume(w: Workload, o: OursCtx, round: number, shim?: ShimClient): Promise<void> {
    const [suspendOp, resumeOp, how] = shim ? ['suspend-rpc', 'resume-rpc', ' rpc'] as const : ['suspend', 'resume', ''] as const;
    const s = shim ? await this.rpc('suspend', o.id, shim) : await this.cli('suspend', o.id);
    const used = await gpuUsedMiB();
    this.sample({ workload: w.name, path: 'ours', op: suspendOp, round, ms: s.ms, parts: s.steps });
    if (s.shimMs !== undefined) this.sample({ workload: w.name, path: 'ours', op: 'suspend-shim', round, ms: s.shimMs });
    this.check(used < o.used0 - 500, `${w.name} ours${how} round ${round}: GPU memory released while suspended`, `${o.used0} -> ${used} MiB`);
    const r = shim ? await this.rpc('resume', o.id, shim) : await this.cli('resume', o.id);
    this.sample({ workload: w.name, path: 'ours', op: resumeOp, round, ms: r.ms, parts: r.steps });
    if (r.shimMs !== undefined) this.sample({ workload: w.name, path: 'ours', op: 'resume-shim', round, ms: r.shimMs });
    const got = await w.check(o.pid);
    this.check(got === o.expected, `${w.name} ours${how} round ${round}: answers after resume`, got === o.expected ? '' : `got ${got.slice(0, 300)}`);
  }

  async removeOurs(id: string): Promise<void> {
    // The shim keeps CRIU's logs in the bundle, which Tasks.Delete removes.
    const bundle = path.join(this.state, 'io.containerd.runtime.v2.task', NAMESPACE, id);
    try {
      for (const f of fs.readdirSync(bundle)) {
        if (f.endsWith('.log')) fs.copyFileSync(path.join(bundle, f), path.join(this.a.logs, `${id}.bundle.${f}`));
      }
      for (const f of fs.readdirSync(path.join(bundle, 'criu-work'))) {
        if (f.endsWith('.log')) fs.copyFileSync(path.join(bundle, 'criu-work', f), path.join(this.a.logs, `${id}.criu-work.${f}`));
      }
    } catch { /* no bundle (left already) */ }
    try { await this.ctd.kill(id, 9); } catch { /* not running */ }
    try { await this.ctd.waitStopped(id, 15_000); } catch { /* gone */ }
    try { await this.ctd.deleteTask(id); } catch { /* no task */ }
    try { await this.ctd.deleteContainer(id); } catch (err) { log(`delete container ${id}: ${(err as Error).message}`); }
  }

  private async stockCheckpointRestore(w: Workload, s: StockCtx, round: number): Promise<void> {
    const images = path.join(IMAGES, `${s.id}-${round}`);
    fs.rmSync(images, { recursive: true, force: true });
    let raw = new RawDriver(this.a.raw, s.pid);
    await raw.ready();
    const c = await raw.suspend();
    raw.close();
    const dump = await this.stock.checkpoint(s.id, images, path.join(this.a.work, 'criu-work', `${s.id}-${round}`));
    const used = await gpuUsedMiB();
    this.sample({ workload: w.name, path: 'stock', op: 'checkpoint', round, ms: c.lockMs! + c.checkpointMs! + dump.ms, bytes: dirBytes(images), parts: { ...c, runcCheckpointMs: dump.ms } });
    this.check(used < s.used0 - 500, `${w.name} stock round ${round}: GPU memory released after checkpoint`, `${s.used0} -> ${used} MiB`);
    const rest = await this.stock.restore(s.id, s.bundle, images, path.join(this.a.work, 'criu-work', `${s.id}-r${round}`), s.logFile);
    s.pid = await this.stock.pid(s.id);
    raw = new RawDriver(this.a.raw, s.pid);
    try {
      await raw.ready();
      const r = await raw.resume();
      this.sample({ workload: w.name, path: 'stock', op: 'restore', round, ms: rest.ms + r.restoreMs! + r.unlockMs!, parts: { runcRestoreMs: rest.ms, ...r } });
    } finally {
      raw.close();
    }
    const got = await w.check(s.pid);
    this.check(got === s.expected, `${w.name} stock round ${round}: answers after restore`, got === s.expected ? '' : `got ${got.slice(0, 300)}`);
    fs.rmSync(images, { recursive: true, force: true });
  }

  /** Suspend in place, the stock way: driver lock+checkpoint then freeze; thaw then restore+unlock. */
  private async stockSuspendResume(w: Workload, s: StockCtx, round: number, raw: RawDriver, cg: string): Promise<void> {
    const c = await raw.suspend();
    const freezeMs = await setFrozen(cg, true);
    const used = await gpuUsedMiB();
    this.sample({ workload: w.name, path: 'stock', op: 'suspend', round, ms: c.lockMs! + c.checkpointMs!, parts: { ...c, freezeMs } });
    this.check(used < s.used0 - 500, `${w.name} stock round ${round}: GPU memory released while suspended`, `${s.used0} -> ${used} MiB`);
    const thawMs = await setFrozen(cg, false);
    const r = await raw.resume();
    this.sample({ workload: w.name, path: 'stock', op: 'resume', round, ms: r.restoreMs! + r.unlockMs!, parts: { ...r, thawMs } });
    const got = await w.check(s.pid);
    this.check(got === s.expected, `${w.name} stock round ${round}: answers after resume`, got === s.expected ? '' : `got ${got.slice(0, 300)}`);
  }
}

interface OursCtx { id: string; pid: number; expected: string; used0: number }
interface StockCtx { id: string; bundle: string; logFile: string; pid: number; expected: string; used0: number }

function writeReport(a: Args, report: Report): string {
  const table = formatTable(report);
  fs.writeFileSync(path.join(a.out, 'container-results.json'), `${JSON.stringify(report, null, 2)}\n`);
  fs.writeFileSync(path.join(a.out, 'container-table.md'), table);
  return table;
}

async function main(): Promise<number> {
  const a = parseArgs(process.argv.slice(2));
  fs.mkdirSync(a.out, { recursive: true });
  fs.mkdirSync(a.logs, { recursive: true });
  fs.mkdirSync(IMAGES, { recursive: true });
  const files = path.join(a.work, 'files');
  fs.mkdirSync(files, { recursive: true });
  fs.copyFileSync(a.workload, path.join(files, 'workload'));
  fs.chmodSync(path.join(files, 'workload'), 0o755);
  fs.copyFileSync(a.server, path.join(files, 'torch-server.py'));
  const probe = probeHost(a.only.includes('torch') ? 'python3' : undefined);
  log(`probe: ${probe.devices.map((d) => `${d.path}=${d.major}:${d.minor}`).join(' ')}; libs ${probe.driverLibs.map((l) => l.link).join(' ')}; python ${JSON.stringify(probe.python)}`);
  const suite = new Suite(a, probe);
  // run.sh bounds this suite with timeout(1): what was measured until then is still written.
  process.once('SIGTERM', () => {
    suite.activator?.kill();
    suite.agent?.kill();
    suite.check(false, 'container suite', 'stopped by SIGTERM (time limit) before it finished');
    console.log(writeReport(a, suite.report));
    process.exit(1);
  });
  suite.report.device = (await exec('nvidia-smi', ['--query-gpu=name,driver_version,memory.total', '--format=csv,noheader'])).stdout.trim();
  const workloads: Workload[] = [];
  if (a.only.includes('cuda')) workloads.push(cudaWorkload(a.gib));
  if (a.only.includes('torch')) workloads.push(torchWorkload(probe));
  try {
    await suite.preflight();
    await suite.startContainerd();
    await suite.detectCli();
    if (a.agent) await suite.startAgent();
    await suite.tierRound();
    writeReport(a, suite.report);
    for (const w of workloads) {
      try {
        await suite.pair(w);
      } catch (err) {
        suite.check(false, `${w.name}`, (err as Error).stack ?? String(err));
      }
      writeReport(a, suite.report);
    }
  } catch (err) {
    suite.check(false, 'container suite', (err as Error).stack ?? String(err));
  } finally {
    await suite.stop();
    console.log(writeReport(a, suite.report));
  }
  const failed = suite.report.checks.filter((c) => !c.ok).length;
  console.log(`containers: ${suite.report.checks.length - failed} checks passed, ${failed} failed`);
  return failed === 0 ? 0 : 1;
}

main().then((code) => { process.exitCode = code; }, (err: unknown) => {
  console.error(`containers: ${(err as Error).stack ?? String(err)}`);
  process.exitCode = 1;
});
