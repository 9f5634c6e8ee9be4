// The activator path of the GPU container suite (issue 11): kybernate-activator (the bundle pack.sh carries as
// .deps/gpu/dist/kybernate-activator.cjs) in front of the agent's torch container (agent-path.ts), after the
// agent's own rounds. One route, sleep kind suspend, then (the config file rewritten: the activator reloads
// it) checkpoint; each round:
//   idle → the activator puts it to sleep through the agent (route state asleep) → GPU memory released (and,
//   after a checkpoint, the process gone) → one request through the activator wakes it (resume / restore +
//   readiness probe) → the answers through the activator are those computed before the first checkpoint.
// Rows: wake-suspend / wake-checkpoint = the client's wall for the request that woke it (fresh connection);
// its parts: the activator's lastWake steps (agent-get, resume|restore = the bare agent call as the activator
// timed it, resume/… the agent's own steps, probe), activatorMs (lastWake.ms), headerMs (x-kybernate-wake-ms),
// warmMs (the same request through the activator while awake) and addedMs = client − bare agent call.
// sleep-suspend / sleep-checkpoint: lastSleep.ms (the agent's Suspend / Checkpoint{exit} as the activator saw it).
// The torch server listens on a unix socket in its container's /tmp (CRIU 4.1.1 cannot dump TCP sockets on
// this kernel; the containers share the host's network), so the route's upstream is a TCP relay in this
// process on 127.0.0.1 that connects each connection to /proc/<pid>/root<socket>, pid read from the
// container's cgroup at connect time (it changes with every restore).
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { AgentClient } from '../../src/agent-api/client';
import { fetchActivatorStatus, type RouteStatus } from '../../src/activator-api/status';
import type { AgentCtx, AgentHost } from './agent-path';
import { median, type Sample } from './report';
import { cgroupDirOf, gpuUsedMiB } from './stock';
import type { Workload } from './workloads';

export interface ActivatorOptions {
  node: string;
  /** dist/kybernate-activator.cjs */
  bundle: string;
  /** The suite's kybernate-agent. */
  agent: string;
  namespace: string;
  /** Its config file and admin socket go here. */
  dir: string;
  env: NodeJS.ProcessEnv;
  logFile: string;
  pidFile: string;
  rounds: number;
}

type Kind = 'suspend' | 'checkpoint';
const ROUTE = 'torch';
const IDLE_MS = 2_000;
const SLEEP_TIMEOUT_MS = 180_000;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const r1 = (x: number): number => Math.round(x * 10) / 10;
const alive = (pid: number): boolean => {
  try { process.kill(pid, 0); return true; } catch { return false; }
};

/** GET through the activator's front on a fresh connection. */
function get(listen: string, p: string): Promise<{ status: number; body: string; wakeMs?: string; ms: number }> {
  const i = listen.lastIndexOf(':');
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.get({ host: listen.slice(0, i), port: Number(listen.slice(i + 1)), path: p, agent: false, timeout: 120_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'),
        wakeMs: res.headers['x-kybernate-wake-ms'] as string | undefined, ms: performance.now() - t0 }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${p} through the activator: no answer in 120 s`)));
    req.on('error', reject);
  });
}

export class ActivatorPath {
  private child?: ChildProcess;
  private relay?: net.Server;
  private client?: AgentClient;
  private listen = '';
  private admin = '';
  private readonly config: string;

  constructor(private readonly o: ActivatorOptions, private readonly host: AgentHost, private readonly log: (s: string) => void) {
    this.config = path.join(o.dir, 'activator.json');
  }

  /** The relay: 127.0.0.1:<port> → the server's unix socket in the container whose cgroup is `cg`. */
  private async startRelay(cg: string, socket: string): Promise<string> {
    this.relay = net.createServer((down) => {
      let up: net.Socket | undefined;
      down.on('error', () => up?.destroy());
      try {
        const pid = Number(fs.readFileSync(path.join(cg, 'cgroup.procs'), 'utf8').split('\n')[0]);
        if (!pid) throw new Error('no process');
        up = net.connect(path.join('/proc', String(pid), 'root', socket));
        up.on('error', () => down.destroy());
        down.pipe(up).pipe(down);
      } catch {
        down.destroy(); // asleep or between restores: the activator's probe tries again
      }
    });
    await new Promise<void>((r) => this.relay!.listen(0, '127.0.0.1', r));
    return `127.0.0.1:${(this.relay.address() as net.AddressInfo).port}`;
  }

  private writeConfig(kind: Kind | 'never', upstream: string): void {
    fs.writeFileSync(this.config, `${JSON.stringify({
      listen: '127.0.0.1:0', agent: this.o.agent, admin: path.join(this.o.dir, 'admin.sock'), metrics: 'off', 'log-level': 'info',
      routes: [{
        name: ROUTE, host: '*', pathPrefix: '/', workload: { namespace: this.o.namespace, id: this.ctxId }, upstream,
        sleep: { kind, idleMs: IDLE_MS, minRunMs: 0, graceMs: 100 },
        probe: { http: '/health', intervalMs: 5, timeoutMs: 120_000 },
        limits: { queue: 100, waitMs: 300_000, responseStartMs: 120_000 }, failAfter: 3,
      }],
    }, null, 2)}\n`);
  }

  private ctxId = '';

  private async start(): Promise<void> {
    if (!fs.existsSync(this.o.bundle)) throw new Error(`no ${this.o.bundle} (run test/gpu/pack.sh)`);
    const logFd = fs.openSync(this.o.logFile, 'a');
    this.child = spawn(this.o.node, [this.o.bundle, '--config', this.config], { env: this.o.env, stdio: ['ignore', 'pipe', logFd] });
    fs.closeSync(logFd);
    if (this.child.pid) fs.writeFileSync(this.o.pidFile, `${this.child.pid}\n`);
    let out = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`kybernate-activator did not log 'listening' in 30 s: ${out.slice(-2000)}`)), 30_000);
      this.child!.once('exit', (code) => { clearTimeout(timer); reject(new Error(`kybernate-activator exited ${code}: ${out.slice(-2000)}`)); });
      this.child!.stdout!.on('data', (d: Buffer) => {
        fs.appendFileSync(this.o.logFile, d);
        if (this.listen) return;
        out += d.toString();
        const line = out.split('\n').find((l) => l.includes('"msg":"listening"'));
        if (!line) return;
        const l = JSON.parse(line) as { listen: string; admin: string };
        this.listen = l.listen;
        this.admin = l.admin;
        clearTimeout(timer);
        resolve();
      });
    });
    this.log(`kybernate-activator pid ${this.child.pid} on ${this.listen}, admin ${this.admin}`);
  }

  private async route(): Promise<RouteStatus> {
    const r = (await fetchActivatorStatus(this.admin)).routes.find((x) => x.name === ROUTE);
    if (!r) throw new Error(`the activator has no route ${ROUTE}`);
    return r;
  }

  private async waitRoute(what: string, ok: (r: RouteStatus) => boolean, timeoutMs: number): Promise<RouteStatus> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await this.route();
      if (ok(r)) return r;
      if (r.state === 'failed' || r.lastSleep?.ok === false) throw new Error(`waiting for ${what}: route ${r.state}: ${r.reason ?? r.lastSleep?.error ?? ''}`);
      if (Date.now() > deadline) throw new Error(`waiting for ${what}: still ${r.state} after ${timeoutMs} ms`);
      await sleep(20);
    }
  }

  /** The suite's torch answers, asked through the activator; the first request's answer with it. */
  private async answers(): Promise<{ got: string; first: Awaited<ReturnType<typeof get>> }> {
    const parts: string[] = [];
    let first: Awaited<ReturnType<typeof get>> | undefined;
    for (const p of ['/infer?x=0.5', '/infer?x=2.5', '/weights']) {
      const r = await get(this.listen, p);
      if (r.status !== 200) throw new Error(`GET ${p} through the activator: ${r.status} ${r.body.slice(0, 300)}`);
      first ??= r;
      parts.push(r.body);
    }
    return { got: parts.join('\n'), first: first! };
  }

  /** The activator rounds of the agent's container `a` (torch only: the CUDA workload is no HTTP server). */
  async run(w: Workload, a: AgentCtx): Promise<void> {
    const socket = w.args[w.args.indexOf('--socket') + 1];
    if (w.name !== 'torch' || !socket) return;
    fs.mkdirSync(this.o.dir, { recursive: true, mode: 0o700 });
    this.ctxId = a.id;
    const cg = cgroupDirOf(a.pid);
    const upstream = await this.startRelay(cg, socket);
    this.client = new AgentClient({ address: this.o.agent, timeoutMs: 10_000 });
    this.writeConfig('suspend', upstream);
    await this.start();
    const first = await this.answers();
    this.host.check(first.got === a.expected, `${w.name} activator: answers through the activator before any sleep`, first.got === a.expected ? '' : `got ${first.got.slice(0, 300)}`);
    for (const kind of ['suspend', 'checkpoint'] as const) {
      if (kind !== 'suspend') {
        this.writeConfig(kind, upstream);
        await this.waitRoute(`sleepKind ${kind} (config reloaded)`, (r) => r.sleepKind === kind, 30_000);
      }
      for (let round = 1; round <= this.o.rounds; round++) await this.round(w, a, kind, round, cg);
    }
    this.writeConfig('never', upstream);
    await this.waitRoute('sleepKind never', (r) => r.sleepKind === 'never', 30_000);
    this.summary(w);
  }

  private async round(w: Workload, a: AgentCtx, kind: Kind, round: number, cg: string): Promise<void> {
    const tag = `${w.name} activator ${kind} round ${round}`;
    // Awake now (the last request woke it): its memory, its pid, a warm request's time through the activator.
    const warm = await get(this.listen, '/infer?x=0.5');
    const usedAwake = await gpuUsedMiB();
    const pid = Number(fs.readFileSync(path.join(cg, 'cgroup.procs'), 'utf8').split('\n')[0]);
    const t0 = Date.now();
    const slept = await this.waitRoute('asleep', (r) => r.state === 'asleep', IDLE_MS + SLEEP_TIMEOUT_MS);
    const used = await gpuUsedMiB();
    this.host.sample({ workload: w.name, path: 'ours', op: `sleep-${kind}` as Sample['op'], round, ms: slept.lastSleep?.ms ?? NaN,
      parts: { agentCallMs: slept.lastSleep?.ms ?? NaN, idlePlusSleepMs: Date.now() - t0 } });
    this.host.check(used < usedAwake - 500, `${tag}: GPU memory released while asleep (nvidia-smi)`, `${usedAwake} -> ${used} MiB`);
    if (kind === 'checkpoint') this.host.check(!alive(pid), `${tag}: the server process is gone while checkpointed`, `pid ${pid} ${alive(pid) ? 'alive' : 'gone'}`);
    else this.host.check(alive(pid), `${tag}: the server process is kept (frozen) while suspended`, `pid ${pid}`);
    // One request wakes it; its answer and the two others are checked.
    const { got, first } = await this.answers();
    const st = await this.route();
    a.pid = Number(fs.readFileSync(path.join(cg, 'cgroup.procs'), 'utf8').split('\n')[0]) || a.pid;
    this.host.check(got === a.expected, `${tag}: answers through the activator after the wake`, got === a.expected ? '' : `got ${got.slice(0, 300)}`);
    const wake = st.lastWake;
    this.host.check(wake?.ok === true && wake.from === kind && first.wakeMs !== undefined, `${tag}: the activator woke it from ${kind} and said so (x-kybernate-wake-ms)`,
      `lastWake ${JSON.stringify(wake)}, header ${first.wakeMs ?? 'none'}`);
    const bare = wake?.steps.find((s) => s.name === (kind === 'suspend' ? 'resume' : 'restore'))?.ms;
    const parts: Record<string, number> = Object.fromEntries((wake?.steps ?? []).map((s) => [s.name, s.ms]));
    Object.assign(parts, { activatorMs: wake?.ms ?? NaN, headerMs: Number(first.wakeMs ?? NaN), warmMs: r1(warm.ms), addedMs: r1(first.ms - (bare ?? NaN)) });
    this.host.sample({ workload: w.name, path: 'ours', op: `wake-${kind}` as Sample['op'], round, ms: first.ms, parts });
    this.log(`${tag}: client ${first.ms.toFixed(1)} ms, bare ${kind === 'suspend' ? 'Agent.Resume' : 'Agent.Restore'} ${bare ?? '?'} ms, ` +
      `added ${(first.ms - (bare ?? NaN)).toFixed(1)} ms, activator ${wake?.ms} ms, header ${first.wakeMs}; GPU ${usedAwake} -> ${used} MiB asleep`);
    if (kind === 'checkpoint') {
      // Its snapshots hold the whole device memory on /dev/shm: gone after each round.
      const snaps = await this.client!.listSnapshots({ namespace: this.o.namespace, id: a.id });
      for (const s of snaps.snapshots ?? []) await this.client!.deleteSnapshot({ snapshot: s.id ?? '' }).catch((e: Error) => this.log(`delete snapshot: ${e.message}`));
    }
  }

  /** Medians per kind into a note (the table prints notes), and the target check: activator added <= 50 ms. */
  private summary(w: Workload): void {
    for (const kind of ['suspend', 'checkpoint'] as const) {
      const xs = this.host.report.samples.filter((s) => s.workload === w.name && s.op === `wake-${kind}`);
      if (!xs.length) continue;
      const m = (k: string): string => median(xs.map((s) => s.parts?.[k] ?? NaN)).toFixed(1);
      const client = median(xs.map((s) => s.ms));
      const added = median(xs.map((s) => s.parts?.addedMs ?? NaN));
      const bareName = kind === 'suspend' ? 'resume' : 'restore';
      this.host.report.notes.push(`${w.name} activator wake-${kind} (medians of ${xs.length}): client ${client.toFixed(1)} ms = bare Agent.${kind === 'suspend' ? 'Resume' : 'Restore'} ` +
        `${m(bareName)} ms + activator added ${added.toFixed(1)} ms (agent-get ${m('agent-get')}, probe ${m('probe')}, the same request warm ${m('warmMs')}); ` +
        `activator lastWake ${m('activatorMs')} ms, x-kybernate-wake-ms ${m('headerMs')}`);
      this.host.check(added <= 50, `${w.name} activator wake-${kind}: activator added <= 50 ms (median)`, `${added.toFixed(1)} ms`);
    }
  }

  async stop(): Promise<void> {
    this.client?.close();
    this.relay?.close();
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGTERM');
    await Promise.race([exited, sleep(5_000)]);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    fs.rmSync(this.o.pidFile, { force: true });
  }

  kill(): void {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}
