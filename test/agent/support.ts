// The agent as the tests run it: bin/kybernate-agent (the bundle, as installed) in a temp directory of its
// own (socket, snapshot directory, an empty config file so /etc is never read), metrics on a free loopback
// port, ready once it logged `listening`. Every agent started here is SIGKILLed after the file.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll } from 'vitest';
import { AgentClient } from '../../src/agent-api/client';
import { KybernateError } from '../../src/errors';
import { REPO_ROOT, type Containerd } from '../e2e/support/harness';

const exec = promisify(execFile);
export const AGENT_BIN = join(REPO_ROOT, 'bin', 'kybernate-agent');
export const CLI = join(REPO_ROOT, 'dist', 'kybernate.cjs');

const base = mkdtempSync(join(tmpdir(), 'kyb-agent-'));
const live = new Set<ChildProcess>();
afterAll(() => {
  for (const c of live) c.kill('SIGKILL');
  rmSync(base, { recursive: true, force: true });
});

/** Bundles the agent, CLI and shim from this tree (under the build lock the other suites take). */
export async function bundle(): Promise<void> {
  await exec('flock', ['/tmp/kyb-build.lock', process.execPath, join(REPO_ROOT, 'scripts', 'bundle.cjs')]);
}

/** A fresh directory, removed after the file. */
export function tempDir(prefix: string): string {
  return mkdtempSync(join(base, `${prefix}-`));
}

/** A fresh directory for one agent: `run/` does not exist yet, so the agent creates it. */
export function agentDir(): string {
  const dir = mkdtempSync(join(base, 'a-'));
  writeFileSync(join(dir, 'config.json'), '{}\n');
  mkdirSync(join(dir, 'snapshots'));
  return dir;
}

export interface Agent {
  pid: number;
  dir: string;
  socket: string;
  metrics?: string;
  tcp?: string;
  /** Its log lines so far (JSON). */
  logs(): string;
  client(): AgentClient;
  /** SIGKILL, resolved once it is gone. */
  kill(): Promise<void>;
  /** SIGTERM, resolved with its exit code. */
  stop(): Promise<number | null>;
}

export interface AgentOptions {
  cd?: Containerd;
  dir?: string;
  args?: string[];
  env?: Record<string, string>;
}

/** The command line: containerd's (or a socket nobody serves), the dir's socket, snapshots and config. */
export function agentArgs(o: AgentOptions, dir: string): string[] {
  return [
    '--config', join(dir, 'config.json'),
    '--containerd-address', o.cd?.address ?? join(dir, 'no-containerd.sock'),
    '--containerd-state', o.cd?.state ?? join(dir, 'no-state'),
    '--socket', join(dir, 'run', 'agent.sock'),
    '--snapshot-dir', join(dir, 'snapshots'),
    '--metrics', '127.0.0.1:0',
    ...(o.args ?? []),
  ];
}

/** Starts an agent and waits until it listens; rejects with its output if it exits first. */
export function startAgent(o: AgentOptions = {}): Promise<Agent> {
  const dir = o.dir ?? agentDir();
  const child = spawn(AGENT_BIN, agentArgs(o, dir), { env: { ...process.env, ...o.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => { live.delete(child); r(code); }));
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.includes('"msg":"listening"'));
      if (!line) return;
      const l = JSON.parse(line) as { socket: string; metrics?: string; tcp?: string };
      resolve({
        pid: child.pid!, dir, socket: l.socket, metrics: l.metrics, tcp: l.tcp,
        logs: () => out,
        client: () => new AgentClient({ address: l.socket }),
        kill: async () => { child.kill('SIGKILL'); await exited; },
        stop: async () => { child.kill('SIGTERM'); return exited; },
      });
    });
    void exited.then((code) => reject(new Error(`kybernate-agent exited ${code} before listening:\n${out}${err}`)));
  });
}

export interface Run { code: number; stdout: string; stderr: string }

/** An agent expected to exit (refusals): its exit code and output. */
export async function agentExit(o: AgentOptions = {}): Promise<Run> {
  const dir = o.dir ?? agentDir();
  try {
    const { stdout, stderr } = await exec(AGENT_BIN, agentArgs(o, dir), { timeout: 30_000, env: { ...process.env, ...o.env } });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const x = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof x.code === 'number' ? x.code : -1, stdout: x.stdout ?? '', stderr: x.stderr ?? '' };
  }
}

/** The bundled CLI. */
export async function kybernate(args: string[], env: Record<string, string> = {}): Promise<Run> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [CLI, ...args], { timeout: 90_000, env: { ...process.env, ...env } });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const x = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof x.code === 'number' ? x.code : -1, stdout: x.stdout ?? '', stderr: x.stderr ?? '' };
  }
}

/** How a call failed: the Kybernate code the client rebuilt and the gRPC status underneath. */
export async function failure(p: Promise<unknown>): Promise<{ code: string; status: number; message: string }> {
  try {
    await p;
  } catch (err) {
    if (!KybernateError.is(err)) throw err;
    return { code: err.code, status: (err.cause as { code?: number } | undefined)?.code ?? -1, message: err.message };
  }
  throw new Error('the call succeeded');
}
