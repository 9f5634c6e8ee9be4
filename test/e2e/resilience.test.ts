// What happens around the shim: containerd restarts, the shim is SIGKILLed, a container is OOM-killed.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { TEST_IMAGE } from './support/harness';
import { describeMatrix } from './support/matrix';
import {
  LOOP, alive, bundleDir, cmdline, ppid, runDetached, task, tasks, waitFor, waitStatus,
} from './support/ctr';
import { deleteTask, eventContainerId, watchEvents } from './support/grpc';

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
    // containerd's runc shim watches a container's cgroup for OOM kills from the end of Start on (it adds
    // it to its OOM watcher once runc start has returned), and an OOM before that is never reported:
    // cgroup v1's eventfd signals only OOMs after its registration, and the v2 watchers react only to
    // memory.events changing after they started. A dd exec'd as init can be killed before that, so the
    // container allocates only once `ctr run -d`, i.e. Start, has returned: it waits for a file the test
    // then creates.
    const sync = mkdtempSync(join(tmpdir(), 'kyb-oom-'));
    const watch = await watchEvents(cd.address, cd.namespace);
    try {
      await cd.ctrOk(['run', '-d', '--runtime', rt.runtime, '--memory-limit', String(16 << 20),
        '--mount', `type=bind,src=${sync},dst=/sync,options=rbind:ro`, TEST_IMAGE, id,
        // dd allocates its whole block before reading, so 64 MiB blocks cannot fit a 16 MiB limit.
        'sh', '-c', 'until [ -e /sync/go ]; do sleep 0.01; done; exec dd if=/dev/zero of=/dev/null bs=64M count=4']);
      writeFileSync(join(sync, 'go'), '');
      const ev = await watch.waitFor((e) => e.topic === '/tasks/oom' && eventContainerId(e) === id, 15_000);
      expect(ev.namespace).toBe(cd.namespace);
      expect(ev.typeUrl).toBe('containerd.events.TaskOOM');
      await waitStatus(cd, id, 'STOPPED');
      expect((await deleteTask(cd.address, cd.namespace, id)).exitStatus).toBe(137);
    } finally {
      watch.close();
      rmSync(sync, { recursive: true, force: true });
    }
  });

  if (ctx.rt.kind === 'kybernate') {
    it('an OOM kill at the first instruction after Start is published too (kybernate only: it watches from Create on)', async () => {
      const { cd, rt } = ctx;
      const id = ctx.id('oom-at-once');
      const watch = await watchEvents(cd.address, cd.namespace);
      try {
        const r = await cd.ctr(['run', '--rm', '--runtime', rt.runtime, '--memory-limit', String(16 << 20),
          TEST_IMAGE, id, 'dd', 'if=/dev/zero', 'of=/dev/null', 'bs=64M', 'count=4']);
        expect(r.code).toBe(137);
        const ev = await watch.waitFor((e) => e.topic === '/tasks/oom' && eventContainerId(e) === id, 15_000);
        expect(ev.typeUrl).toBe('containerd.events.TaskOOM');
      } finally {
        watch.close();
      }
    });
  }
});
