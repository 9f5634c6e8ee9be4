// What happens around the shim: containerd restarts, the shim is SIGKILLed, a container is OOM-killed.
import { existsSync } from 'node:fs';
import { expect, it } from 'vitest';
import { TEST_IMAGE } from './support/harness';
import { describeMatrix } from './support/matrix';
import {
  LOOP, alive, bundleDir, cmdline, ppid, runDetached, task, tasks, waitFor, waitStatus,
} from './support/ctr';
import { eventContainerId, watchEvents } from './support/grpc';

describeMatrix('resilience', (ctx) => {
  it('containers keep running across a containerd restart; exec and kill still work', async () => {
    const { cd, rt } = ctx;
    const a = ctx.id('restart-a');
    const b = ctx.id('restart-b');
    const ta = await runDetached(cd, rt.runtime, a, LOOP);
    const tb = await runDetached(cd, rt.runtime, b, LOOP);

    await cd.restart();

    const after = await waitFor('tasks to be listed after restart', async () => {
      const t = await tasks(cd);
      return t.get(a) && t.get(b) ? t : undefined;
    });
    expect(after.get(a)).toEqual({ pid: ta.pid, status: 'RUNNING' });
    expect(after.get(b)).toEqual({ pid: tb.pid, status: 'RUNNING' });
    expect(alive(ta.pid) && alive(tb.pid)).toBe(true);

    expect(await cd.ctrOk(['tasks', 'exec', '--exec-id', 'after-restart', a, 'echo', 'still here'])).toBe('still here\n');
    await cd.ctrOk(['tasks', 'kill', '-s', 'SIGKILL', b]);
    await waitStatus(cd, b, 'STOPPED');
    expect(alive(tb.pid)).toBe(false);
    expect((await task(cd, a))?.status).toBe('RUNNING');
  });

  it('a SIGKILLed shim is cleaned up by containerd, and new containers still work', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('shimkill');
    const t = await runDetached(cd, rt.runtime, id, LOOP);
    const shim = ppid(t.pid);
    expect(cmdline(shim).join(' ')).toContain(rt.shimName);
    const bundle = bundleDir(cd, id);
    expect(existsSync(bundle)).toBe(true);

    process.kill(shim, 'SIGKILL');

    await waitFor('task to be gone or stopped', async () => {
      const now = await task(cd, id);
      return now === undefined || now.status === 'STOPPED';
    });
    await waitFor('container init to be gone', () => !alive(t.pid));
    await waitFor(`bundle ${bundle} to be removed`, () => !existsSync(bundle));
    await cd.ctr(['tasks', 'rm', '-f', id]);
    await cd.ctrOk(['containers', 'rm', id]);

    const fresh = ctx.id('after-shimkill');
    expect(await cd.ctrOk(['run', '--rm', '--runtime', rt.runtime, TEST_IMAGE, fresh, 'echo', 'fresh'])).toBe('fresh\n');
  });

  it('an OOM-killed container exits 137 and /tasks/oom is published', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('oom');
    const watch = await watchEvents(cd.address, cd.namespace);
    try {
      // dd allocates its whole block before reading, so 64 MiB blocks cannot fit a 16 MiB limit.
      const r = await cd.ctr(['run', '--rm', '--runtime', rt.runtime, '--memory-limit', String(16 << 20),
        TEST_IMAGE, id, 'dd', 'if=/dev/zero', 'of=/dev/null', 'bs=64M', 'count=4']);
      expect(r.code).toBe(137);
      const ev = await watch.waitFor((e) => e.topic === '/tasks/oom' && eventContainerId(e) === id, 15_000);
      expect(ev.namespace).toBe(cd.namespace);
      expect(ev.typeUrl).toBe('containerd.events.TaskOOM');
    } finally {
      watch.close();
    }
  });
});
