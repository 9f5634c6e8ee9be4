// Task life cycle through real containerd + ctr, for every containerd version and runtime (see support/matrix.ts).
import { execFile } from 'node:child_process';
import { readFileSync, readlinkSync } from 'node:fs';
import { expect, it } from 'vitest';
import { TEST_IMAGE, type Containerd } from './support/harness';
import { describeMatrix } from './support/matrix';
import {
  LOOP, alive, memoryLimit, readInContainer, runDetached, sleep, task, waitFor, waitStatus,
} from './support/ctr';
import { deleteTask, updateTaskResources } from './support/grpc';

/** Runs `ctr tasks exec -t` under `script`, which gives ctr the terminal it insists on for -t. */
function execWithTty(cd: Containerd, id: string, execId: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    // The command text is constant; every variable part travels in the environment.
    const cmd = 'exec "$KYB_CTR" --address "$KYB_ADDR" -n "$KYB_NS" tasks exec -t --exec-id "$KYB_EXEC" "$KYB_ID" '
      + 'sh -c \'test -t 0 && test -t 1 && echo TTY-YES; exit 5\'';
    execFile('script', ['-qefc', cmd, '/dev/null'], {
      timeout: 30_000,
      env: { ...process.env, KYB_CTR: ctrBinary(cd), KYB_ADDR: cd.address, KYB_NS: cd.namespace, KYB_EXEC: execId, KYB_ID: id },
    }, (err, stdout) => {
      const code = err ? Number((err as { code?: unknown }).code ?? 1) : 0;
      resolve({ code, out: String(stdout) });
    }).stdin?.end();
  });
}

/** ctr ships next to containerd in every package this suite uses. */
function ctrBinary(cd: Containerd): string {
  return readlinkSync(`/proc/${cd.pid}/exe`).replace(/containerd$/, 'ctr');
}

describeMatrix('lifecycle', (ctx) => {
  it('run --rm prints the output and propagates the exit status', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('rm');
    const out = await cd.ctrOk(['run', '--rm', '--runtime', rt.runtime, TEST_IMAGE, id, 'echo', 'hello from', id]);
    expect(out).toBe(`hello from ${id}\n`);
    expect((await cd.ctrOk(['containers', 'ls', '-q'])).split('\n')).not.toContain(id);

    const id2 = ctx.id('rm-exit');
    const r = await cd.ctr(['run', '--rm', '--runtime', rt.runtime, TEST_IMAGE, id2, 'sh', '-c', 'echo bye; exit 3']);
    expect(r.stdout).toBe('bye\n');
    expect(r.code).toBe(3);
    expect((await cd.ctrOk(['containers', 'ls', '-q'])).split('\n')).not.toContain(id2);
  });

  it('detached task: kill -s TERM runs the trap (exit 7), kill -s KILL gives 137', async () => {
    const { cd, rt } = ctx;
    const a = ctx.id('kill-term');
    const b = ctx.id('kill-9');
    await runDetached(cd, rt.runtime, a, LOOP);
    const tb = await runDetached(cd, rt.runtime, b, LOOP);
    expect(alive(tb.pid)).toBe(true);

    await cd.ctrOk(['tasks', 'kill', '-s', 'SIGTERM', a]);
    await cd.ctrOk(['tasks', 'kill', '-s', 'SIGKILL', b]);
    await waitStatus(cd, a, 'STOPPED');
    await waitStatus(cd, b, 'STOPPED');
    expect(alive(tb.pid)).toBe(false);
    expect((await deleteTask(cd.address, cd.namespace, a)).exitStatus).toBe(7);
    expect(await deleteTask(cd.address, cd.namespace, b)).toEqual({ pid: tb.pid, exitStatus: 137 });
    expect(await task(cd, a)).toBeUndefined();
  });

  it('attached run ends with the exit status of a task killed from outside', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('attached');
    const running = cd.ctr(['run', '--rm', '--runtime', rt.runtime, TEST_IMAGE, id, ...LOOP]);
    await waitStatus(cd, id, 'RUNNING');
    await cd.ctrOk(['tasks', 'kill', '-s', 'SIGTERM', id]);
    expect((await running).code).toBe(7);
  });

  it('exec without a tty: separate stdout and stderr, exit status', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('exec');
    await runDetached(cd, rt.runtime, id, LOOP);
    const r = await cd.ctr(['tasks', 'exec', '--exec-id', 'plain', id, 'sh', '-c',
      'test -t 1 || echo no-tty; echo to-stderr >&2; exit 4']);
    expect(r.stdout).toBe('no-tty\n');
    expect(r.stderr).toContain('to-stderr');
    expect(r.code).toBe(4);
    // The exec id can be reused once the first exec is gone.
    expect(await cd.ctrOk(['tasks', 'exec', '--exec-id', 'plain', id, 'echo', 'again'])).toBe('again\n');
  });

  it('exec with a tty', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('exec-tty');
    await runDetached(cd, rt.runtime, id, LOOP);
    const r = await execWithTty(cd, id, 'tty1');
    expect(r.out).toContain('TTY-YES');
    expect(r.code).toBe(5);
  });

  it('stdin reaches the container', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('stdin');
    // ctr never closes the task's stdin at EOF of its own (it does not call CloseIO), so the reader stops by count.
    const input = 'line one\nline two\n';
    const out = await cd.ctrOk(['run', '--rm', '--runtime', rt.runtime, TEST_IMAGE, id, 'head', '-n', '2'], { input });
    expect(out).toBe(input);
  });

  it('pause and resume: PAUSED stops the counter, RUNNING continues it', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('pause');
    const { pid } = await runDetached(cd, rt.runtime, id,
      ['sh', '-c', 'i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.02; done']);
    const counter = (): number => Number(readInContainer(pid, '/tmp/n').trim() || '0');
    const start = counter();
    await waitFor('counter to advance', () => counter() > start);

    await cd.ctrOk(['tasks', 'pause', id]);
    expect((await task(cd, id))?.status).toBe('PAUSED');
    const frozen = counter();
    await sleep(300);
    expect(counter()).toBe(frozen);

    await cd.ctrOk(['tasks', 'resume', id]);
    expect((await task(cd, id))?.status).toBe('RUNNING');
    await waitFor('counter to advance after resume', () => counter() > frozen);
  });

  it('ps lists the init pid and the pids of execs', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('ps');
    const { pid } = await runDetached(cd, rt.runtime, id, LOOP);
    await cd.ctrOk(['tasks', 'exec', '-d', '--exec-id', 'sleeper', id, 'sleep', '1000']);
    // Until the exec shows as `sleep 1000`: for a moment after `exec -d` returns its process may still be
    // `runc init`, and the loop's own short sleeps come and go.
    const pids = await waitFor('exec to show in ps', async () => {
      const out = await cd.ctrOk(['tasks', 'ps', id]);
      const list = out.split('\n').slice(1).map((l) => Number(l.trim().split(/\s+/)[0])).filter((n) => n > 0);
      return list.some((p) => p !== pid && readCmd(p).startsWith('sleep 1000')) ? list : undefined;
    });
    expect(pids).toContain(pid);
    const execPid = pids.find((p) => p !== pid && readCmd(p).startsWith('sleep 1000'));
    expect(execPid, `no "sleep 1000" among ${pids.join(',')}`).toBeDefined();
  });

  it('metrics prints real numbers', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('metrics');
    await runDetached(cd, rt.runtime, id, LOOP);
    const json = JSON.parse(await cd.ctrOk(['tasks', 'metrics', '--format', 'json', id])) as Record<string, unknown>;
    const { usage, pids } = metricNumbers(json);
    expect(usage).toBeGreaterThan(0);
    expect(pids).toBeGreaterThanOrEqual(1);
    const table = await cd.ctrOk(['tasks', 'metrics', id]);
    expect(table).toMatch(/memory\.usage/);
  });

  it('update sets a new memory limit on the running task', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('update');
    const { pid } = await runDetached(cd, rt.runtime, id, LOOP, ['--memory-limit', String(256 << 20)]);
    expect(memoryLimit(pid)).toBe(256 << 20);
    await updateTaskResources(cd.address, cd.namespace, id, { memory: { limit: 96 << 20 } });
    expect(memoryLimit(pid)).toBe(96 << 20);
    expect((await task(cd, id))?.status).toBe('RUNNING');
  });
});

function readCmd(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return '';
  }
}

/** Memory usage and pid count from `ctr tasks metrics --format json`, for cgroup v1 and v2 layouts. */
function metricNumbers(m: Record<string, unknown>): { usage: number; pids: number } {
  const memory = (m.memory ?? {}) as Record<string, unknown>;
  const usageObj = memory.usage as { usage?: number } | number | undefined;
  const usage = typeof usageObj === 'number' ? usageObj : Number(usageObj?.usage ?? 0);
  const pids = Number((m.pids as { current?: number } | undefined)?.current ?? 0);
  return { usage, pids };
}
