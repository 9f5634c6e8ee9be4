// The agent path of the GPU container suite (issue 10): kybernate-agent (the bundle pack.sh carries as
// .deps/gpu/dist/kybernate-agent.cjs) runs beside the suite's containerd for the whole run, and one
// AgentClient, connected once, drives a third container of each workload (created like the 'ours' one, in
// the suite's namespace under the kybernate runtime, so the agent sees it):
//   suspend-agent / resume-agent:       Agent.Suspend / Agent.Resume (GPU memory released while suspended,
//                                       the answers after resume);
//   checkpoint-agent / restore-agent:   Agent.Checkpoint{exit} into the agent's snapshot directory (on the
//                                       same tmpfs as the 'ours' checkpoint images) / Agent.Restore of that
//                                       snapshot (GPU memory released after checkpoint, the answers after
//                                       restore); the snapshot is deleted through the agent after each round.
// Each row's stock is the existing one (raw lock+checkpoint, raw restore+unlock, runc checkpoint/restore).
// Times are the wall of one unary call from this running process over the open channel, as the activator
// or the CLI would see them. A step that throws fails its check and ends the agent rounds of that workload
// (its container may be left without a task); the suite's other rounds go on.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import type Long from 'long';
import { AgentClient } from '../../src/agent-api/client';
import { kybernate } from '../../src/gen/proto';
import { manifestSteps } from './shim-log';
import { gpuUsedMiB } from './stock';
import { median, type Report, type Sample } from './report';
import type { Workload } from './workloads';

const S = kybernate.agent.v1.WorkloadState;
/** A 4 GiB checkpoint takes seconds; the agent's own operation timeout is 30 min (the CLI allows 20). */
const OP_TIMEOUT_MS = 20 * 60_000;
const START_TIMEOUT_MS = 60_000;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
export const num = (x: Long | number | null | undefined): number => (x == null ? 0 : typeof x === 'number' ? x : x.toNumber());
const r1 = (x: number): number => Math.round(x * 10) / 10;

/** What the suite gives the agent path: where to record checks and samples. */
export interface AgentHost {
  readonly report: Report;
  check(ok: boolean, what: string, detail?: string): void;
  sample(s: Sample): void;
}

/** The agent's container of one workload: like the suite's OursCtx, plus why its agent rounds stopped. */
export interface AgentCtx { id: string; pid: number; expected: string; used0: number; failed?: string }

export interface AgentOptions {
  node: string;
  /** dist/kybernate-agent.cjs */
  bundle: string;
  /** The suite's containerd: its socket and state directory (where the shims' addresses are). */
  address: string;
  state: string;
  namespace: string;
  socket: string;
  snapshotDir: string;
  env: NodeJS.ProcessEnv;
  logFile: string;
  /** The agent's pid is written here, so that run.sh can kill it when the suite itself is killed. */
  pidFile: string;
  /** Its config file (--config), e.g. the snapshot tiers' (tiers-path.ts); none: no file (the defaults and flags). */
  config?: string;
}

type Result = kybernate.agent.v1.IOperationResult;

/** A result's steps (step:pid names: the table sums them per step) with the agent's own duration and the rest of the wall. */
export function partsOf(r: Result, wallMs: number, opName: string): Record<string, number> {
  const parts: Record<string, number> = Object.fromEntries((r.steps ?? []).map((s) => [s.name ?? '', r1(s.durationMs ?? 0)]));
  parts[opName] = r1(r.durationMs ?? 0);
  parts.aroundMs = r1(wallMs - (r.durationMs ?? 0));
  return parts;
}

export class AgentPath {
  private child?: ChildProcess;
  private client?: AgentClient;

  constructor(private readonly o: AgentOptions, private readonly host: AgentHost, private readonly log: (s: string) => void) {}

  /** Starts the agent and waits until it answers Health with containerd reachable; throws with its log's tail otherwise. */
  async start(): Promise<void> {
    const o = this.o;
    if (!fs.existsSync(o.bundle)) throw new Error(`no ${o.bundle} (run test/gpu/pack.sh)`);
    fs.rmSync(o.snapshotDir, { recursive: true, force: true });
    fs.mkdirSync(o.snapshotDir, { recursive: true, mode: 0o700 });
    const logFd = fs.openSync(o.logFile, 'a');
    this.child = spawn(o.node, [o.bundle, '--containerd-address', o.address, '--containerd-state', o.state, '--socket', o.socket,
      '--snapshot-dir', o.snapshotDir, '--metrics', 'off', ...(o.config ? ['--config', o.config] : [])], { env: o.env, stdio: ['ignore', logFd, logFd] });
    fs.closeSync(logFd);
    if (this.child.pid) fs.writeFileSync(o.pidFile, `${this.child.pid}\n`);
    const client = new AgentClient({ address: o.socket, timeoutMs: 5_000 });
    const deadline = Date.now() + START_TIMEOUT_MS;
    let last = 'no socket yet';
    let containerdVersion = '';
    while (!containerdVersion) {
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        client.close();
        throw new Error(`kybernate-agent exited ${this.child.exitCode ?? this.child.signalCode}: ${this.logTail()}`);
      }
      if (fs.existsSync(o.socket)) {
        try {
          const h = await client.health({});
          if (h.containerd) containerdVersion = h.containerdVersion || '?';
          else last = 'Health: containerd not reachable';
        } catch (err) {
          last = (err as Error).message;
        }
      }
      if (containerdVersion) break;
      if (Date.now() > deadline) {
        client.close();
        throw new Error(`kybernate-agent not serving after ${START_TIMEOUT_MS / 1000} s (${last}): ${this.logTail()}`);
      }
      await sleep(100);
    }
    this.client = client;
    this.log(`kybernate-agent pid ${this.child.pid} serving on ${o.socket} (containerd ${containerdVersion})`);
    let about = '';
    try {
      const v = await client.version({});
      // The first restore would otherwise pay the agent's cuInit (it checks the snapshot against the GPU list).
      const t0 = performance.now();
      const g = await client.gpus({}, { timeoutMs: 60_000 });
      about = `kybernate-agent ${v.version} (${v.revision}); its Gpus call before the rounds (CUDA init) took ${(performance.now() - t0).toFixed(0)} ms` +
        `${g.unavailable ? ` and said: ${g.unavailable}` : ` (${g.gpus?.map((x) => x.name).join(', ')})`}`;
    } catch (err) {
      about = `kybernate-agent: Version/Gpus before the rounds failed: ${(err as Error).message}`;
    }
    this.host.report.notes.push(`${about}. It ran through all container rounds (--agent 0 leaves it out), snapshots in ${o.snapshotDir}${o.config ? ` (config file ${o.config}: ${fs.readFileSync(o.config, 'utf8').replace(/\s+/g, ' ').trim()})` : ''}; ` +
      'it watches containerd\'s task events, so after each task event of the other kybernate containers it looks at them too (shim Status, nvidia-smi)');
  }

  get serving(): boolean {
    return this.client !== undefined;
  }

  private logTail(): string {
    try {
      return fs.readFileSync(this.o.logFile, 'utf8').trim().split('\n').slice(-5).join(' | ');
    } catch {
      return '(no log)';
    }
  }

  /** Whether the agent rounds of this container go on (they stop after the first step that threw). */
  private usable(a: AgentCtx | undefined): a is AgentCtx {
    return this.client !== undefined && a !== undefined && a.failed === undefined;
  }

  private failed(w: Workload, a: AgentCtx, round: number, what: string, err: unknown): void {
    a.failed = `${what} in round ${round}`;
    this.host.check(false, `${w.name} agent round ${round}: ${what}`, (err as Error).stack ?? String(err));
    this.host.report.notes.push(`${w.name}: the agent rounds stopped at ${a.failed}`);
  }

  /** Agent.Suspend, then Agent.Resume, checked like the suite's own suspend rounds. */
  async suspendResume(w: Workload, a: AgentCtx | undefined, round: number): Promise<void> {
    if (!this.usable(a)) return;
    const req = { namespace: this.o.namespace, id: a.id };
    let what = 'Agent.Suspend';
    try {
      let t0 = performance.now();
      const s = await this.client!.suspend(req, { timeoutMs: OP_TIMEOUT_MS });
      const sMs = performance.now() - t0;
      const used = await gpuUsedMiB();
      this.host.sample({ workload: w.name, path: 'ours', op: 'suspend-agent', round, ms: sMs, parts: partsOf(s, sMs, 'shimMs') });
      this.host.check(used < a.used0 - 500, `${w.name} agent round ${round}: GPU memory released while suspended`, `${a.used0} -> ${used} MiB`);
      this.host.check(s.workload?.state === S.SUSPENDED, `${w.name} agent round ${round}: the agent reports the workload suspended`,
        `state ${S[s.workload?.state ?? 0]}, cuda pids ${JSON.stringify(s.cudaPids ?? [])}`);
      what = 'Agent.Resume';
      t0 = performance.now();
      const r = await this.client!.resume(req, { timeoutMs: OP_TIMEOUT_MS });
      const rMs = performance.now() - t0;
      this.host.sample({ workload: w.name, path: 'ours', op: 'resume-agent', round, ms: rMs, parts: partsOf(r, rMs, 'shimMs') });
      what = 'answers after resume';
      const got = await w.check(a.pid);
      this.host.check(got === a.expected, `${w.name} agent round ${round}: answers after resume`, got === a.expected ? '' : `got ${got.slice(0, 300)}`);
    } catch (err) {
      this.failed(w, a, round, what, err);
    }
  }

  /** Agent.Checkpoint{exit}, then Agent.Restore of that snapshot, checked like the suite's own restore rounds. */
  async checkpointRestore(w: Workload, a: AgentCtx | undefined, round: number): Promise<void> {
    if (!this.usable(a)) return;
    const req = { namespace: this.o.namespace, id: a.id };
    let what = 'Agent.Checkpoint{exit}';
    let snapshot = '';
    try {
      let t0 = performance.now();
      const c = await this.client!.checkpoint({ ...req, exit: true }, { timeoutMs: OP_TIMEOUT_MS });
      const cMs = performance.now() - t0;
      const used = await gpuUsedMiB();
      snapshot = c.snapshot?.id ?? '';
      const manifest = c.snapshot?.path ? manifestSteps(c.snapshot.path) : undefined;
      this.host.sample({ workload: w.name, path: 'ours', op: 'checkpoint-agent', round, ms: cMs, bytes: num(c.snapshot?.sizeBytes),
        parts: { ...manifest, ...partsOf(c, cMs, 'agentMs') } });
      this.host.check(used < a.used0 - 500, `${w.name} agent round ${round}: GPU memory released after checkpoint`, `${a.used0} -> ${used} MiB`);
      this.host.check(c.workload?.state === S.CHECKPOINTED && snapshot !== '', `${w.name} agent round ${round}: the agent reports the workload checkpointed`,
        `state ${S[c.workload?.state ?? 0]}, snapshot ${snapshot || 'none'}`);
      what = 'Agent.Restore';
      t0 = performance.now();
      const r = await this.client!.restore({ ...req, snapshot }, { timeoutMs: OP_TIMEOUT_MS });
      const rMs = performance.now() - t0;
      this.host.sample({ workload: w.name, path: 'ours', op: 'restore-agent', round, ms: rMs, parts: partsOf(r, rMs, 'agentMs') });
      what = 'answers after restore';
      a.pid = r.workload?.pid || (await this.client!.get(req)).pid || 0;
      this.host.check(r.workload?.state === S.RUNNING, `${w.name} agent round ${round}: the agent reports the workload running`, `state ${S[r.workload?.state ?? 0]}, pid ${a.pid}`);
      const got = await w.check(a.pid);
      this.host.check(got === a.expected, `${w.name} agent round ${round}: answers after restore`, got === a.expected ? '' : `got ${got.slice(0, 300)}`);
    } catch (err) {
      this.failed(w, a, round, what, err);
    } finally {
      // The snapshot holds the workload's whole device memory on /dev/shm: gone after the round, like the suite's own images.
      if (snapshot) await this.client!.deleteSnapshot({ snapshot }).catch((err: Error) => this.log(`delete snapshot ${snapshot}: ${err.message}`));
    }
  }

  /** A note of what the agent adds over the direct calls (medians of the rounds; the issue's target for suspend/resume: <= +5 ms). */
  summary(w: Workload): void {
    const med = (op: Sample['op']): number | undefined => {
      const xs = this.host.report.samples.filter((s) => s.workload === w.name && s.path === 'ours' && s.op === op).map((s) => s.ms);
      return xs.length ? median(xs) : undefined;
    };
    const pairs: Array<[Sample['op'], Sample['op'], string]> = [
      ['suspend-agent', 'suspend-rpc', 'suspend'], ['resume-agent', 'resume-rpc', 'resume'],
      ['checkpoint-agent', 'checkpoint', 'checkpoint (the agent also waits for the exit and deletes the task)'], ['restore-agent', 'restore', 'restore'],
    ];
    const parts = pairs.flatMap(([agent, direct, name]) => {
      const x = med(agent);
      const y = med(direct);
      return x === undefined || y === undefined ? [] : [`${name} ${x - y >= 0 ? '+' : ''}${(x - y).toFixed(1)} ms`];
    });
    if (parts.length) {
      this.host.report.notes.push(`${w.name}: through the agent minus the direct call from the suite (Control rpc for suspend/resume, containerd Tasks for checkpoint/restore; medians): ${parts.join(', ')}`);
    }
  }

  /** Closes the client and stops the agent (SIGTERM, SIGKILL after 5 s). */
  async stop(): Promise<void> {
    this.client?.close();
    this.client = undefined;
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGTERM');
    await Promise.race([exited, sleep(5_000)]);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await Promise.race([exited, sleep(2_000)]);
    }
    if (child.exitCode !== null || child.signalCode !== null) fs.rmSync(this.o.pidFile, { force: true });
    fs.rmSync(this.o.snapshotDir, { recursive: true, force: true });
  }

  /** For the suite's SIGTERM handler, which exits at once. */
  kill(): void {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}
