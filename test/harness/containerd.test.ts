// The harness itself, against the stock runc shim: every other end-to-end test stands on it.
import { existsSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mountsUnder, processAlive, processesMentioning } from './cleanup';
import {
  ALL_VERSIONS, RUNC_RUNTIME, TEST_IMAGE, missingReason, startContainerd, type Containerd,
} from './containerd';

async function waitRunning(cd: Containerd, id: string): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const line = lines(await cd.ctrOk(['tasks', 'ls'])).find((l) => l.split(/\s+/)[0] === id);
    const [, pid, status] = line?.split(/\s+/) ?? [];
    if (status === 'RUNNING') return Number(pid);
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`task ${id} never RUNNING:\n${cd.logs().slice(-2000)}`);
}

function lines(s: string): string[] {
  return s.split('\n').map((l) => l.trim()).filter(Boolean);
}

for (const version of ALL_VERSIONS) {
  const missing = missingReason(version);
  describe.skipIf(missing !== undefined)(`containerd ${version}${missing ? ` (skipped: ${missing})` : ''}`, () => {
    let cd: Containerd;

    beforeAll(async () => {
      cd = await startContainerd(version);
    });
    afterAll(async () => {
      await cd?.stop();
    });

    it('answers on its own socket with the expected version and has the test image', async () => {
      expect(cd.address.length).toBeLessThan(100);
      const v = await cd.ctrOk(['version']);
      expect(v).toMatch(new RegExp(`Server:[\\s\\S]*Version:\\s+v?${version.replace('.', '\\.')}\\.`));
      expect(await cd.ctrOk(['images', 'ls', '-q'])).toContain(TEST_IMAGE);
    });

    it('runs a container with the stock runc shim', async () => {
      const out = await cd.ctrOk(['run', '--rm', '--runtime', RUNC_RUNTIME, TEST_IMAGE, 'hello', 'echo', 'hi']);
      expect(out.trim()).toBe('hi');
    });

    it('passes stdin through ctr', async () => {
      // `ctr run` never closes the container's stdin on EOF, so the command must stop by itself.
      const out = await cd.ctrOk(['run', '--rm', TEST_IMAGE, 'stdin1', 'head', '-n', '1'], { input: 'from stdin\nnot read\n' });
      expect(out).toBe('from stdin\n');
    });

    it('reports a failing ctr call with its exit code and stderr', async () => {
      const r = await cd.ctr(['tasks', 'kill', 'no-such-task']);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/not found/);
      await expect(cd.ctrOk(['tasks', 'kill', 'no-such-task'])).rejects.toThrow(/not found/);
    });

    it('restarts containerd while a shim and its container keep running', async () => {
      await cd.ctrOk(['run', '-d', TEST_IMAGE, 'survivor', 'sleep', '1000']);
      const taskPid = await waitRunning(cd, 'survivor');
      const shims = processesMentioning(cd.address).filter((p) => p !== cd.pid);
      expect(shims.length).toBeGreaterThan(0);
      const before = cd.pid;

      await cd.restart();

      expect(cd.pid).not.toBe(before);
      expect(processAlive(before)).toBe(false);
      for (const pid of shims) expect(processAlive(pid), `shim ${pid} survived`).toBe(true);
      expect(await waitRunning(cd, 'survivor')).toBe(taskPid);
      const out = await cd.ctrOk(['tasks', 'exec', '--exec-id', 'e1', 'survivor', 'echo', 'still here']);
      expect(out.trim()).toBe('still here');
    });

    it('stop() leaves no process, mount or directory behind', async () => {
      const other = await startContainerd(version, { namespace: 'harness-stop' });
      await other.ctrOk(['run', '-d', TEST_IMAGE, 'left-running', 'sleep', '1000']);
      const taskPid = await waitRunning(other, 'left-running');
      expect(mountsUnder(other.dir).length).toBeGreaterThan(0);

      await other.stop();

      expect(processesMentioning(other.dir)).toEqual([]);
      expect(processAlive(taskPid)).toBe(false);
      expect(processAlive(other.pid)).toBe(false);
      expect(mountsUnder(other.dir)).toEqual([]);
      expect(existsSync(other.dir)).toBe(false);
      expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(other.dir);
    });

    it('stop() cleans up even when a shim does not answer', async () => {
      const other = await startContainerd(version, { namespace: 'harness-hung', stopTasksTimeoutMs: 2_000 });
      await other.ctrOk(['run', '-d', TEST_IMAGE, 'hung', 'sleep', '1000']);
      const taskPid = await waitRunning(other, 'hung');
      const shims = processesMentioning(other.address).filter((p) => p !== other.pid);
      expect(shims.length).toBe(1);
      process.kill(shims[0]!, 'SIGSTOP');

      await other.stop();

      expect(processesMentioning(other.dir)).toEqual([]);
      expect(processAlive(taskPid)).toBe(false);
      expect(mountsUnder(other.dir)).toEqual([]);
      expect(existsSync(other.dir)).toBe(false);
    });
  });
}
