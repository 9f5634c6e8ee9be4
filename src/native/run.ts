// run(): start a helper (runc, criu, …), feed it input, capture its output, wait for its exit.
//
// With the reaper started (the shim), the child is spawned through the addon and its exit comes from
// the one native reaper; stdout/stderr are native pipes read through net.Socket, so nothing blocks the
// event loop. Without the reaper (a one-shot CLI that never became a subreaper) run() falls back to
// child_process.spawn: libuv then reaps its own child, and nothing else in such a process reaps. The
// fallback ignores deathSignal (child_process has no PR_SET_PDEATHSIG).
import * as childProcess from 'node:child_process';
import net from 'node:net';
import os from 'node:os';
import type { Readable } from 'node:stream';
import * as native from './index';
import { reaper } from './reaper';

export interface RunOptions {
  /** Environment: an object like process.env or "K=V" entries. Default: process.env. */
  env?: NodeJS.ProcessEnv | string[];
  cwd?: string;
  /** Written to the child's stdin through a pipe; without it stdin is /dev/null (or `stdin`). */
  input?: Buffer | string;
  /** fd overrides for the child's stdio (-1 = /dev/null); a given fd is not captured. */
  stdin?: number;
  stdout?: number;
  stderr?: number;
  /** Become the child's fds 3, 4, … */
  extraFds?: number[];
  deathSignal?: number;
  /** SIGKILL the child after this long; the result then has timedOut = true. */
  timeoutMs?: number;
  /** Bytes kept per captured stream (default 16 MiB); the rest is read and dropped. */
  maxBuffer?: number;
}

export interface RunResult {
  /** Exit code, or 128+signal when killed. */
  status: number;
  signal: number;
  stdout: Buffer;
  stderr: Buffer;
  timedOut: boolean;
}

const DEFAULT_MAX_BUFFER = 16 * 1024 * 1024;

function envList(env: NodeJS.ProcessEnv | string[] | undefined): string[] {
  if (Array.isArray(env)) return env;
  return Object.entries(env ?? process.env)
    .filter((e): e is [string, string] => e[1] !== undefined)
    .map(([k, v]) => `${k}=${v}`);
}

function envObject(env: NodeJS.ProcessEnv | string[] | undefined): NodeJS.ProcessEnv {
  if (!Array.isArray(env)) return env ?? process.env;
  const out: NodeJS.ProcessEnv = {};
  for (const kv of env) {
    const i = kv.indexOf('=');
    if (i > 0) out[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return out;
}

/** Reads a stream to its end, keeping at most max bytes; resolves on close, also after errors. */
function collect(stream: Readable | null, max: number): { done: Promise<Buffer>; destroy(): void } {
  if (stream === null) return { done: Promise.resolve(Buffer.alloc(0)), destroy() {} };
  const chunks: Buffer[] = [];
  let kept = 0;
  stream.on('data', (chunk: Buffer) => {
    if (kept >= max) return;
    const part = chunk.length > max - kept ? chunk.subarray(0, max - kept) : chunk;
    chunks.push(part);
    kept += part.length;
  });
  const done = new Promise<Buffer>((resolve) => {
    stream.on('error', () => {});
    stream.on('close', () => resolve(Buffer.concat(chunks, kept)));
  });
  return { done, destroy: () => stream.destroy() };
}

function writeInput(stream: NodeJS.WritableStream & { on(ev: 'error', f: () => void): unknown }, input: Buffer | string) {
  stream.on('error', () => {}); // EPIPE: the child did not read all of it; its exit tells the story
  stream.end(input);
}

/** Runs file with args and resolves with its exit and captured output; rejects only if it cannot start. */
export function run(file: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return reaper.started ? runNative(file, args, opts) : runFallback(file, args, opts);
}

async function runNative(file: string, args: string[], opts: RunOptions): Promise<RunResult> {
  const max = opts.maxBuffer ?? DEFAULT_MAX_BUFFER;
  const parentEnds: number[] = [];
  const childEnds: number[] = [];
  const pipeFor = (parentReads: boolean): [number, number] => {
    const [r, w] = native.pipe();
    parentEnds.push(parentReads ? r : w);
    childEnds.push(parentReads ? w : r);
    return parentReads ? [r, w] : [w, r];
  };
  let spawned: ReturnType<typeof reaper.spawn>;
  const capture: { out?: number; err?: number; in?: number } = {};
  try {
    const stdio: [number, number, number] = [opts.stdin ?? -1, opts.stdout ?? -1, opts.stderr ?? -1];
    if (opts.input !== undefined) [capture.in, stdio[0]] = pipeFor(false);
    if (opts.stdout === undefined) [capture.out, stdio[1]] = pipeFor(true);
    if (opts.stderr === undefined) [capture.err, stdio[2]] = pipeFor(true);
    spawned = reaper.spawn({
      file,
      args,
      env: envList(opts.env),
      cwd: opts.cwd,
      stdio,
      extraFds: opts.extraFds,
      deathSignal: opts.deathSignal,
    });
  } catch (err) {
    for (const fd of parentEnds) native.close(fd);
    throw err;
  } finally {
    for (const fd of childEnds) native.close(fd);
  }
  const out = collect(capture.out === undefined ? null : new net.Socket({ fd: capture.out, readable: true, writable: false }), max);
  const err = collect(capture.err === undefined ? null : new net.Socket({ fd: capture.err, readable: true, writable: false }), max);
  if (capture.in !== undefined) {
    writeInput(new net.Socket({ fd: capture.in, readable: false, writable: true }), opts.input ?? '');
  }
  let timedOut = false;
  const timer = opts.timeoutMs === undefined ? undefined : setTimeout(() => {
    timedOut = true;
    try {
      process.kill(spawned.pid, 'SIGKILL');
    } catch {
      // already exited
    }
    // A grandchild may still hold the pipes open: stop waiting for their EOF.
    out.destroy();
    err.destroy();
  }, opts.timeoutMs);
  try {
    // Like Go's exec.Cmd.Wait: done when the child exited and both pipes reached EOF.
    const [exit, stdout, stderr] = await Promise.all([spawned.exited, out.done, err.done]);
    return { ...exit, stdout, stderr, timedOut };
  } finally {
    clearTimeout(timer);
  }
}

function runFallback(file: string, args: string[], opts: RunOptions): Promise<RunResult> {
  const max = opts.maxBuffer ?? DEFAULT_MAX_BUFFER;
  const fd = (v: number | undefined, dflt: 'pipe' | 'ignore'): number | 'pipe' | 'ignore' =>
    v === undefined ? dflt : v < 0 ? 'ignore' : v;
  const child = childProcess.spawn(file, args, {
    env: envObject(opts.env),
    cwd: opts.cwd,
    stdio: [
      opts.input !== undefined ? 'pipe' : fd(opts.stdin, 'ignore'),
      fd(opts.stdout, 'pipe'),
      fd(opts.stderr, 'pipe'),
      ...(opts.extraFds ?? []),
    ],
  });
  return new Promise<RunResult>((resolve, reject) => {
    let timedOut = false;
    const out = collect(child.stdout, max);
    const err = collect(child.stderr, max);
    if (child.stdin !== null) writeInput(child.stdin, opts.input ?? '');
    const timer = opts.timeoutMs === undefined ? undefined : setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
      out.destroy();
      err.destroy();
    }, opts.timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signalName) => {
      clearTimeout(timer);
      const signal = signalName === null ? 0 : os.constants.signals[signalName];
      void Promise.all([out.done, err.done]).then(([stdout, stderr]) => {
        resolve({ status: code ?? 128 + signal, signal, stdout, stderr, timedOut });
      });
    });
  });
}
