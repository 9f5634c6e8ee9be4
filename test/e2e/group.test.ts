// Twenty containers in one group are served by one shim process, for every containerd version and runtime.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { TEST_IMAGE } from './support/harness';
import { describeMatrix } from './support/matrix';
import {
  LOOP, bundleDir, cmdline, ppid, shimProcesses, shimSocket, tasks, waitFor,
} from './support/ctr';

const COUNT = 20;
// Starting containers two at a time keeps a 2-core machine busy without piling up shim start-ups.
const PARALLEL = 2;

describeMatrix('group', (ctx) => {
  it(`${COUNT} containers in one group share one shim`, { timeout: 180_000 }, async () => {
    const { cd, rt } = ctx;
    const group = `g-${rt.kind}-${process.pid}`;
    const ids = Array.from({ length: COUNT }, (_, i) => ctx.id(`grp${i}`));
    for (let i = 0; i < ids.length; i += PARALLEL) {
      await Promise.all(ids.slice(i, i + PARALLEL).map((id) => cd.ctrOk(
        ['run', '-d', '--runtime', rt.runtime, '--annotation', `${rt.groupAnnotation}=${group}`, TEST_IMAGE, id, ...LOOP])));
    }
    const all = await waitFor('all tasks RUNNING', async () => {
      const t = await tasks(cd);
      return ids.every((id) => t.get(id)?.status === 'RUNNING') ? t : undefined;
    });

    // containerd dials one address for all of them...
    const sockets = new Set(ids.map((id) => shimSocket(cd, id)));
    expect(sockets.size).toBe(1);
    // ...and one process is the parent (subreaper) of every container's init...
    const parents = new Set(ids.map((id) => ppid(all.get(id)!.pid)));
    expect(parents.size).toBe(1);
    const [shimPid] = [...parents];
    expect(cmdline(shimPid!).join(' ')).toContain(rt.shimName);
    // ...and it is the only shim server this containerd has.
    expect(shimProcesses(cd, rt.shimName)).toEqual([shimPid]);

    // Every container answers through the shared shim.
    const probe = ids[COUNT - 1]!;
    expect(await cd.ctrOk(['tasks', 'exec', '--exec-id', 'probe', probe, 'echo', 'in-group'])).toBe('in-group\n');
    expect(readFileSync(join(bundleDir(cd, ids[0]!), 'config.json'), 'utf8')).toContain(group);
  });
});
