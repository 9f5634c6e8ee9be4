import { afterEach } from 'vitest';
// Shared by the CRIU and CLI tests: a counter process tree, a pid that is free, and one probe of
// whether CRIU can dump at all on this machine (it hangs on some kernels; the tests then say so).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as criu from '../../src/native/criu';

export const here = path.dirname(fileURLToPath(import.meta.url));
export const root = path.resolve(here, '..', '..');
export const isRoot = process.getuid?.() === 0;
export const python = ['/usr/bin/python3', '/usr/local/bin/python3'].find((p) => fs.existsSync(p));
export const hasCriu = criu.criuBinary() !== undefined;
export const addonBuilt = fs.existsSync(path.join(root, 'build', 'Release', 'kybernate.node'));

/**
 * Registers an afterEach that runs the deferred cleanups last in, first out (processes die before their
 * directories go); dir() makes a temp directory removed that way.
 */
export function cleanupEachTest(): { defer(fn: () => void): void; dir(prefix: string): string } {
  const fns: Array<() => void> = [];
  afterEach(() => {
    for (const fn of fns.splice(0).reverse()) fn();
  });
  return {
    defer: (fn) => { fns.push(fn); },
    dir: (prefix) => {
      const d = tmpDir(prefix);
      fns.push(() => fs.rmSync(d, { recursive: true, force: true }));
      return d;
    },
  };
}

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `kyb-${prefix}-`));
}

export interface Counter {
  pid: number;
  file: string;
  read(): number;
  /** Kills the counter tree and its reaper. */
  stop(): void;
}

/**
 * Starts fixtures/counter.py in its own session (CRIU dumps whole sessions) with stdio on /dev/null,
 * under fixtures/subreaper.py, which reaps the tree's orphans so their pids are free for the restore.
 */
export async function startCounter(dir: string): Promise<Counter> {
  if (python === undefined) throw new Error('python3 not found');
  const file = path.join(dir, 'count');
  const reaper = spawn(python, [path.join(here, 'fixtures', 'subreaper.py'), python, path.join(here, 'fixtures', 'counter.py'), file], {
    detached: true,
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const pid = await new Promise<number>((resolve, reject) => {
    let out = '';
    reaper.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(Number(out.trim()));
    });
    reaper.once('exit', () => reject(new Error('subreaper.py exited')));
  });
  reaper.stdout!.destroy();
  reaper.unref();
  const read = (): number => Number(fs.readFileSync(file, 'utf8'));
  for (let i = 0; i < 500 && !fs.existsSync(file); i++) await sleep(10);
  return {
    pid,
    file,
    read,
    stop: () => {
      killTree(pid);
      reaper.kill('SIGKILL');
    },
  };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Waits until fn() is true (polling), failing after timeoutMs. */
export async function until(fn: () => boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(20);
  }
}

/** Kills a whole tree started by startCounter (its own process group). */
export function killTree(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // gone
  }
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // gone
  }
}

/** A pid that no process has: a child that has exited and been waited for. */
/** A pid no process can have: the kernel hands out pids below pid_max only (a reaped child's pid may be reused at once). */
export async function freePid(): Promise<number> {
  return Number((await fs.promises.readFile('/proc/sys/kernel/pid_max', 'utf8')).trim());
}

export interface DumpProbe {
  /** Why CRIU cannot dump here (tests that need a dump skip with it); undefined when it can. */
  broken?: string;
  /** Dumps hang unless criu avoids hardware breakpoints (CRIU_FAULT=130); seen in this VM. */
  needsNoBreakpoints: boolean;
}

let probe: Promise<DumpProbe> | undefined;

async function dumpSleeper(noBreakpoints: boolean): Promise<criu.CriuError | undefined> {
  const dir = tmpDir('probe');
  const c = spawn('/bin/sleep', ['60'], { detached: true, stdio: 'ignore' });
  try {
    await criu.dump({ pid: c.pid!, imagesDir: dir, leaveRunning: true, timeoutMs: 10_000, noBreakpoints });
    return undefined;
  } catch (err) {
    return err as criu.CriuError;
  } finally {
    c.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Probes once whether CRIU can dump here. When only the no-breakpoints mode works, it sets
 * KYBERNATE_CRIU_NO_BREAKPOINTS=1 for this test process and the CLIs it starts.
 */
export function probeDump(): Promise<DumpProbe> {
  return (probe ??= (async (): Promise<DumpProbe> => {
    if (!isRoot) return { broken: 'needs root', needsNoBreakpoints: false };
    if (!hasCriu) return { broken: 'needs the criu binary', needsNoBreakpoints: false };
    if (!addonBuilt) return { broken: 'needs a built addon (make build)', needsNoBreakpoints: false };
    const plain = await dumpSleeper(false);
    if (plain === undefined) return { needsNoBreakpoints: false };
    if (plain.code !== 'ETIMEDOUT') return { broken: `CRIU cannot dump here: ${plain.message}`, needsNoBreakpoints: false };
    const nobp = await dumpSleeper(true);
    if (nobp !== undefined) {
      return { broken: `CRIU cannot dump here: dumps hang, also without hardware breakpoints (${nobp.message})`, needsNoBreakpoints: false };
    }
    process.env.KYBERNATE_CRIU_NO_BREAKPOINTS = '1';
    return { needsNoBreakpoints: true };
  })());
}

/** probeDump()'s reason, for the tests that only need to know whether dumps work. */
export async function dumpBroken(): Promise<string | undefined> {
  return (await probeDump()).broken;
}
