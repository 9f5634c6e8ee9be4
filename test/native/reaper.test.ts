// Reaper, spawn and run(): each scenario runs in its own node process (fixtures/scenario.ts), because
// the reaper reaps every child of its process and would take vitest's own children.
import { spawn as spawnChild } from 'node:child_process';
import fs from 'node:fs';
import readline from 'node:readline';
import { describe, expect, it } from 'vitest';
import { runScenario, scenarioBundle } from './helpers';

describe('native reaper + spawn', () => {
  it('passes env, cwd, extra fds and input, and captures stdout/stderr through native pipes', async () => {
    const r = await runScenario<Record<string, unknown>>('io');
    expect(r).toEqual({
      env: { status: 0, stdout: 'bar\nextra\n', stderr: 'err\n' },
      input: 'hello through a pipe',
      bigLength: 5_000_000,
      cappedLength: 1000,
      cappedStatus: 0,
      cwd: '/tmp',
    });
  });

  it('reports exit codes, and 128+signal for signal deaths; timeoutMs kills', async () => {
    const r = await runScenario<Record<string, unknown>>('exits');
    expect(r).toEqual({
      code: { status: 7, signal: 0 },
      term: { status: 143, signal: 15 },
      killed: { status: 137, signal: 9 },
      timeout: { status: 137, signal: 9, timedOut: true },
    });
  });

  it('throws NativeError with the errno of a failed exec, and drops the failed child\'s exit', async () => {
    const r = await runScenario<Record<string, Record<string, unknown>> & { unclaimed: number }>('failures');
    for (const [key, code] of [['absent', 'ENOENT'], ['pathSearch', 'ENOENT'], ['notExecutable', 'EACCES'], ['badCwd', 'ENOENT']] as const) {
      expect(r[key], key).toMatchObject({ isNativeError: true, code, op: 'spawn', stackHasCaller: true });
      expect(typeof r[key].pid, key).toBe('number');
    }
    expect(r.absent.errno).toBe(2);
    expect(r.absent.path).toBe('/nonexistent/kybernate-test');
    expect(r.badCwd.message).toMatch(/chdir .*missing/);
    expect(r.unclaimed).toBe(0);
  });

  it('gives the child exactly its fds, default signal state, and handles fd collisions', async () => {
    const r = await runScenario<Record<string, unknown>>('fds');
    expect(r.childFds).toEqual(['0', '1', '2', '3']);
    expect(r.ourSigIgn).not.toBe('0000000000000000'); // node ignores SIGPIPE: the reset is meaningful
    expect(r.sigIgn).toBe('0000000000000000');
    expect(r.sigBlk).toBe('0000000000000000');
    expect(r.lowFd).toBe(0);
    expect(r.collide).toBe('through fd 0\n');
  });

  it('reports orphans re-parented to the subreaper as unclaimed exits', async () => {
    const r = await runScenario<Record<string, unknown>>('orphans');
    expect(r.ppidIsUs).toBe(true);
    expect(r.quick).toMatchObject({ status: 0, signal: 0 });
    expect(r.slow).toMatchObject({ status: 137, signal: 9 });
  });

  it('reaps 200 short processes with no zombie, waiter or fd left', async () => {
    const r = await runScenario<Record<string, unknown>>('many');
    expect(r).toEqual({ count: 200, wrong: 0, zombies: 0, pending: 0, unclaimed: 0, newFds: [] });
  });

  it('survives stop/start and still delivers an exit that happened while stopped', async () => {
    expect(await runScenario('stopStart')).toEqual({ status: 3, zombies: 0 });
  });

  it('deathSignal kills the child when the spawning node process dies', async () => {
    const child = spawnChild(process.execPath, [scenarioBundle(), 'pdeathsig'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const line = await new Promise<string>((resolve, reject) => {
      readline.createInterface({ input: child.stdout }).once('line', resolve);
      child.once('exit', (code) => reject(new Error(`scenario exited early (${code})`)));
    });
    const { withSig, without } = JSON.parse(line) as { withSig: number; without: number };
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    // Gone, or a zombie of whoever inherited it: either way it is dead.
    const alive = (pid: number) => {
      try {
        return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
      } catch {
        return false;
      }
    };
    const deadline = Date.now() + 20_000;
    while (alive(withSig) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const withoutAlive = alive(without);
    if (withoutAlive) process.kill(without, 'SIGKILL');
    expect(alive(withSig)).toBe(false);
    expect(withoutAlive).toBe(true);
  });
});
