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

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `kyb-${prefix}-`));
}

export interface Counter {
  pid: number;
  file: string;
  read(): number;
}

/** Starts fixtures/counter.py in its own session (CRIU dumps whole sessions) with stdio on /dev/null. */
export async function startCounter(dir: string): Promise<Counter> {
  if (python === undefined) throw new Error('python3 not found');
  const file = path.join(dir, 'count');
  const child = spawn(python, [path.join(here, 'fixtures', 'counter.py'), file], { detached: true, stdio: 'ignore' });
  child.unref();
  const read = (): number => Number(fs.readFileSync(file, 'utf8'));
  for (let i = 0; i < 500 && !fs.existsSync(file); i++) await sleep(10);
  return { pid: child.pid!, file, read };
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
export async function freePid(): Promise<number> {
  const c = spawn('/bin/true', { stdio: 'ignore' });
  await new Promise((r) => c.once('exit', r));
  return c.pid!;
}

let probe: Promise<string | undefined> | undefined;

/** undefined when CRIU can dump here; otherwise why not (the reason tests that need a dump skip with). */
export function dumpBroken(): Promise<string | undefined> {
  return (probe ??= (async () => {
    if (!isRoot) return 'not root';
    if (!hasCriu) return 'no criu binary';
    if (!addonBuilt) return 'addon not built';
    const dir = tmpDir('probe');
    const c = spawn('/bin/sleep', ['60'], { detached: true, stdio: 'ignore' });
    try {
      await criu.dump({ pid: c.pid!, imagesDir: dir, leaveRunning: true, timeoutMs: 10_000 });
      return undefined;
    } catch (err) {
      const e = err as criu.CriuError;
      return e.code === 'ETIMEDOUT'
        ? 'CRIU cannot dump on this machine: `criu dump` of a sleeping process hangs (parasite never traps on its way out; seen on kernel 6.18 in this VM)'
        : `CRIU cannot dump on this machine: ${e.message}`;
    } finally {
      c.kill('SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    }
  })());
}
