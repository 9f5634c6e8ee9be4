// `kybernate demo`: scale to zero on one host. Sets up containerd (the local one, or a private one), a network
// sandbox, an HTTP workload under the Kybernate runtime, and the demo's own agent and activator; then shows a
// request answered, the workload put to sleep when idle (its process gone, its memory freed), and the next
// request waking it, with the wake split into its steps. Everything it set up is taken down on the way out,
// also after an error or Ctrl-C (the teardown steps run in reverse order, each one whatever the others did).
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import readline from 'node:readline';
import { AgentClient } from '../../agent-api/client';
import { fetchActivatorStatus, type RouteStatus, type WakeRecord } from '../../activator-api/status';
import { KybernateError } from '../../errors';
import { createSandbox, removeNetwork, removeSandbox } from '../../network/sandbox';
import { bytes } from '../format';
import { findOrStartContainerd } from './containerd';
import { startDaemon, writeConfig } from './daemons';
import { startDemoWorkload } from './workload';

export interface DemoOptions {
  once: boolean;
  /** Sleep and wake this many times (once mode; the bench's rounds). */
  rounds: number;
  idleS: number;
  sleep: 'checkpoint' | 'suspend';
  keep: boolean;
  out: (line: string) => void;
}

const NAMESPACE = 'kybernate-demo';
const WORKLOAD = 'web';
const SANDBOX = 'kybernate-demo';
const RUN_DIR = '/run/kybernate-demo';
const STATE_DIR = '/var/lib/kybernate-demo';

export interface DemoRound {
  /** The waking request's time as its client saw it. */
  clientMs: number;
  sleepMs: number;
  wake?: WakeRecord;
}

/** Runs the demo; resolves with each sleep-and-wake round (the last one's clientMs is the wake time shown). */
export async function runDemo(o: DemoOptions, signal: AbortSignal): Promise<DemoRound[]> {
  if (process.getuid?.() !== 0) throw new KybernateError('KYB_ERR_PERMISSION', 'the demo needs root (containerd, network namespaces, CRIU)');
  const teardown: Array<[string, () => Promise<unknown> | unknown]> = [];
  const say = o.out;
  try {
    fs.mkdirSync(RUN_DIR, { recursive: true, mode: 0o700 });
    fs.mkdirSync(path.join(STATE_DIR, 'snapshots'), { recursive: true, mode: 0o700 });
    teardown.push(['files', () => {
      fs.rmSync(path.join(STATE_DIR, 'snapshots'), { recursive: true, force: true });
      for (const f of ['agent.json', 'activator.json']) fs.rmSync(path.join(RUN_DIR, f), { force: true });
    }]);

    // Without hardware breakpoints, CRIU's dumps work on VMs whose debug registers do not (where they hang
    // otherwise), at a few ms per dump elsewhere: the right default for a demo that must just work.
    const cd = await findOrStartContainerd({ runDir: RUN_DIR, stateDir: STATE_DIR, env: { KYBERNATE_CRIU_NO_BREAKPOINTS: '1' } });
    teardown.push(['containerd', () => cd.stop()]);
    say(`containerd  ${cd.private ? `a private containerd ${cd.version} for the demo${cd.note ? ` (${cd.note})` : ''}` : `the local containerd ${cd.version}`} at ${cd.address}`);
    abortable(signal);

    await removeSandbox(SANDBOX).catch(() => undefined); // what a killed demo left
    const sandbox = await createSandbox(SANDBOX);
    teardown.push(['network', async () => {
      await removeSandbox(SANDBOX);
      await removeNetwork(); // the bridge, once nothing else is attached to it
    }]);
    say(`network     namespace ${sandbox.netns}, address ${sandbox.ip} on a CNI bridge (as a pod gets)`);

    const workload = await startDemoWorkload(cd, { namespace: NAMESPACE, id: WORKLOAD, sandbox, replace: true });
    teardown.push(['workload', () => workload.remove()]);
    abortable(signal);

    const agentSocket = path.join(RUN_DIR, 'agent.sock');
    const agentConfig = path.join(RUN_DIR, 'agent.json');
    writeConfig(agentConfig, {});
    const agent = await startDaemon('kybernate-agent', [
      '--config', agentConfig, '--containerd-address', cd.address, '--containerd-state', cd.state, '--socket', agentSocket,
      '--snapshot-dir', path.join(STATE_DIR, 'snapshots'), '--metrics', 'off',
    ]);
    teardown.push(['agent', () => agent.stop()]);
    const client = new AgentClient({ address: agentSocket });
    teardown.push(['agent client', () => client.close()]);
    const pid = (await client.get({ namespace: NAMESPACE, id: WORKLOAD })).pid ?? 0;
    const rss = rssOf(pid);
    say(`workload    ${NAMESPACE}/${WORKLOAD}: busybox httpd at ${workload.upstream}, runtime io.containerd.kybernate.v2, pid ${pid}${rss ? `, ${bytes(rss)} resident` : ''}`);
    say(`agent       ${agentSocket} (pid ${agent.pid})`);

    const admin = path.join(RUN_DIR, 'activator.sock');
    const activatorConfig = path.join(RUN_DIR, 'activator.json');
    writeConfig(activatorConfig, {
      listen: '127.0.0.1:0', agent: agentSocket, admin, metrics: 'off',
      routes: [{
        name: 'demo', workload: { namespace: NAMESPACE, id: WORKLOAD }, upstream: workload.upstream,
        sleep: { kind: o.sleep, idleMs: Math.round(o.idleS * 1000), minRunMs: 0, graceMs: 200 },
        probe: { http: '/', intervalMs: 5 },
      }],
    });
    const activator = await startDaemon('kybernate-activator', ['--config', activatorConfig]);
    teardown.push(['activator', () => activator.stop()]);
    const front = String(activator.ready.listen);
    say(`activator   http://${front}/ → ${workload.upstream}; asleep (${o.sleep}) after ${o.idleS} s without requests`);
    say('');

    let n = 0;
    const request = async (): Promise<number> => {
      n++;
      const r = await get(front, `/cgi-bin/echo?request=${n}`);
      const waited = r.headers['x-kybernate-wake-ms'];
      say(`request ${n}   GET /cgi-bin/echo?request=${n} → ${r.status} ${JSON.stringify(r.body.trim())} in ${r.ms} ms${waited ? ` (it waited ${waited} ms for the wake)` : ''}`);
      if (r.status !== 200) throw new KybernateError('KYB_ERR_UNAVAILABLE', `request ${n} was answered ${r.status}: ${r.body.trim()}`);
      return r.ms;
    };
    const status = async (): Promise<RouteStatus> => (await fetchActivatorStatus(admin)).routes[0]!;

    await request();
    const rounds: DemoRound[] = [];
    for (let i = 0; i < (o.once ? o.rounds : 1); i++) {
      say(`idle        no requests for ${o.idleS} s …`);
      const asleep = await waitState(status, 'asleep', signal, (o.idleS + 120) * 1000);
      const gone = pid > 0 && !fs.existsSync(`/proc/${pid}`);
      const w = await client.get({ namespace: NAMESPACE, id: WORKLOAD });
      say(`asleep      ${o.sleep} in ${asleep.lastSleep?.ms ?? '?'} ms: ${o.sleep === 'checkpoint'
        ? `process ${pid} ${gone ? 'is gone' : 'STILL THERE'}, its ${rss ? bytes(rss) : 'memory'} freed; the agent says ${stateName(w.state)}`
        : `the agent says ${stateName(w.state)}`}`);
      if (o.sleep === 'checkpoint' && !gone) throw new KybernateError('KYB_ERR_INTERNAL', `process ${pid} is still running after the checkpoint`);
      const clientMs = await request();
      const wake = (await status()).lastWake;
      printWake(wake, say);
      rounds.push({ clientMs, sleepMs: asleep.lastSleep?.ms ?? 0, wake });
    }
    if (!o.once) {
      say('');
      say('Press Enter to send a request, Ctrl-C to stop (the workload sleeps again when idle).');
      const clientMs = await interactive(request, status, say, signal);
      if (clientMs > 0) rounds.push({ clientMs, sleepMs: 0 });
    }
    if (o.keep) {
      say(`kept: activator http://${front}/, agent ${agentSocket}; stop them with kill ${activator.pid} ${agent.pid}`);
      teardown.length = 0;
    }
    return rounds;
  } finally {
    for (const [what, step] of teardown.reverse()) {
      try {
        if (process.env.KYB_DEMO_TRACE) process.stderr.write(`teardown ${what}\n`);
        await step();
        if (process.env.KYB_DEMO_TRACE) process.stderr.write(`teardown ${what} done\n`);
      } catch (err) {
        say(`cleanup: ${what}: ${(err as Error).message}`);
      }
    }
  }
}

function printWake(w: WakeRecord | undefined, say: (s: string) => void): void {
  if (!w) return;
  say(`wake        ${w.ms} ms from ${w.from}${w.ok ? '' : ` (FAILED: ${w.error})`}:`);
  for (const s of w.steps) say(`              ${s.name.padEnd(28)} ${String(s.ms).padStart(6)} ms`);
}

async function interactive(request: () => Promise<number>, status: () => Promise<RouteStatus>, say: (s: string) => void, signal: AbortSignal): Promise<number> {
  let last = 0;
  let shown = '';
  const rl = readline.createInterface({ input: process.stdin });
  const poll = setInterval(() => {
    status().then((s) => {
      if (s.state === shown) return;
      shown = s.state;
      if (s.state === 'asleep') say(`asleep      ${s.lastSleep?.kind} in ${s.lastSleep?.ms} ms`);
    }, () => {});
  }, 200);
  try {
    await new Promise<void>((resolve) => {
      signal.addEventListener('abort', () => resolve(), { once: true });
      rl.on('close', () => resolve());
      rl.on('line', () => {
        void request().then(async (ms) => {
          last = ms;
          const s = await status();
          if (s.lastWake && Date.parse(s.lastWake.at) > Date.now() - ms - 1000) printWake(s.lastWake, say);
        }, (err: Error) => say(`request failed: ${err.message}`));
      });
    });
  } finally {
    clearInterval(poll);
    rl.close();
  }
  return last;
}

async function waitState(status: () => Promise<RouteStatus>, state: string, signal: AbortSignal, timeoutMs: number): Promise<RouteStatus> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    abortable(signal);
    const s = await status();
    if (s.state === state) return s;
    if (s.state === 'failed') throw new KybernateError('KYB_ERR_INTERNAL', `the workload failed: ${s.reason}`);
    if (Date.now() > deadline) throw new KybernateError('KYB_ERR_DEADLINE', `the workload did not become ${state} in ${timeoutMs / 1000} s (it is ${s.state}${s.lastSleep?.error ? `: ${s.lastSleep.error}` : ''})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function abortable(signal: AbortSignal): void {
  if (signal.aborted) throw new KybernateError('KYB_ERR_CANCELLED', 'interrupted');
}

const STATES = ['UNKNOWN', 'RUNNING', 'PAUSED', 'SUSPENDED', 'CHECKPOINTED', 'STOPPED'];
const stateName = (s: number | null | undefined): string => STATES[s ?? 0] ?? 'UNKNOWN';

/** Resident memory of the process (VmRSS), 0 when unknown. */
function rssOf(pid: number): number {
  if (pid <= 0) return 0;
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

function get(address: string, p: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string; ms: number }> {
  const i = address.lastIndexOf(':');
  const t0 = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const req = http.get({ host: address.slice(0, i), port: Number(address.slice(i + 1)), path: p, agent: false, timeout: 120_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, ms: Math.round(Number(process.hrtime.bigint() - t0) / 1e6) }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${p}: no answer in 120 s`)));
    req.on('error', reject);
  });
}
