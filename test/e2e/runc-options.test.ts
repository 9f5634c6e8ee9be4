// Runtime options the runc shim honours, for runc and kybernate alike (issue 8): BinaryName wrappers run
// in the bundle directory and their failures are reported, and ShimCgroup moves the new shim into a cgroup.
import { existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { containerd } from '../../src/gen/proto';
import { FEATURES_TYPE_URL } from '../../src/shim/manager/info';
import { ContainerdClient, deleteTask } from './support/grpc';
import { describeMatrix } from './support/matrix';
import { LOOP, ppid, waitStatus } from './support/ctr';
import {
  ScriptDir, createContainer, createTask, rejection, runcOptions, startTask, withShimCgroup,
} from './support/task-options';

function findRunc(): string {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/local/sbin', '/usr/sbin', '/usr/bin'];
  const found = dirs.filter(Boolean).map((d) => join(d, 'runc')).find((p) => existsSync(p));
  if (!found) throw new Error('runc not found');
  return found;
}

/** Shell snippet: exit 42 with `text` on stderr when runc's subcommand (an argument) is `sub`. */
function failOn(sub: string, text: string): string {
  return `for a in "$@"; do [ "$a" = ${sub} ] && { echo "${text}" >&2; exit 42; }; done`;
}

describeMatrix('runc options', (ctx) => {
  const scripts = new ScriptDir();
  let runc = '';
  beforeAll(() => { runc = findRunc(); });
  afterAll(() => scripts.remove());

  it('BinaryName: a wrapper that needs ./config.json in its working directory runs the container (runc runs in the bundle)', async () => {
    const { cd, rt } = ctx;
    const wrapper = scripts.script(`cwd-${rt.kind}`,
      `[ -f ./config.json ] || { echo "wrapper: no ./config.json in $(pwd)" >&2; exit 42; }\nexec ${runc} "$@"`);
    const id = ctx.id('wrap-cwd');
    await createContainer(cd, rt.runtime, id, ['sh', '-c', 'exit 5']);
    await createTask(cd, id, runcOptions({ binaryName: wrapper }));
    await startTask(cd, id);
    await waitStatus(cd, id, 'STOPPED');
    expect((await deleteTask(cd.address, cd.namespace, id)).exitStatus).toBe(5);
  });

  it('BinaryName: a wrapper that fails `start` without a runc log error has its stderr in the error', async () => {
    const { cd, rt } = ctx;
    const marker = `wrapper refuses start ${process.pid}`;
    const wrapper = scripts.script(`fail-start-${rt.kind}`, `${failOn('start', marker)}\nexec ${runc} "$@"`);
    const id = ctx.id('wrap-start');
    await createContainer(cd, rt.runtime, id, LOOP);
    await createTask(cd, id, runcOptions({ binaryName: wrapper }));
    const msg = await rejection(startTask(cd, id));
    expect(msg).toContain(marker);
  });

  it('BinaryName: a wrapper that fails `create` (stderr = the container\'s) is named with its exit status', async () => {
    const { cd, rt } = ctx;
    const wrapper = scripts.script(`fail-create-${rt.kind}`, `${failOn('create', 'no create')}\nexec ${runc} "$@"`);
    const id = ctx.id('wrap-create');
    await createContainer(cd, rt.runtime, id, LOOP);
    const msg = await rejection(createTask(cd, id, runcOptions({ binaryName: wrapper })));
    expect(msg).toContain(wrapper);
    expect(msg).toMatch(/status 42/);
  });

  // Introspection.PluginInfo (containerd 2.0+) runs the runtime's shim with -info and returns its RuntimeInfo.
  it.skipIf(ctx.version !== '2.1')('-info through Introspection.PluginInfo: RuntimeInfo carries runc\'s features', async () => {
    const { cd, rt } = ctx;
    const c = new ContainerdClient(cd.address, cd.namespace);
    const intro = containerd.services.introspection.v1;
    let res: containerd.services.introspection.v1.PluginInfoResponse;
    try {
      res = await c.unary('/containerd.services.introspection.v1.Introspection/PluginInfo', intro.PluginInfoRequest,
        intro.PluginInfoResponse, {
          type: 'io.containerd.runtime.v2', id: 'task',
          options: {
            type_url: 'containerd.types.RuntimeRequest',
            value: containerd.types.RuntimeRequest.encode({ runtimePath: rt.runtime }).finish(),
          },
        });
    } finally {
      c.close();
    }
    expect(res.extra?.type_url).toMatch(/containerd\.types\.RuntimeInfo$/);
    const info = containerd.types.RuntimeInfo.decode(res.extra?.value ?? new Uint8Array());
    expect(info.name).toBe(rt.runtime);
    expect(info.features?.type_url).toBe(FEATURES_TYPE_URL);
    const features = JSON.parse(Buffer.from(info.features?.value ?? new Uint8Array()).toString('utf8')) as { ociVersionMin?: string };
    expect(features.ociVersionMin).toMatch(/^1\./);
  });

  it('ShimCgroup: start moves the new shim process into the cgroup', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('shimcg');
    await withShimCgroup(cd, id, `kyb-shimcg-${rt.kind}-${process.pid}-${cd.version}`, async (cgroup) => {
      await createContainer(cd, rt.runtime, id, LOOP);
      const pid = await createTask(cd, id, runcOptions({ shimCgroup: cgroup }));
      await startTask(cd, id);
      return ppid(pid);
    });
  });
});

// containerd's runc shim reports the last error in the container's log.json, also one an earlier runc
// call left there; kybernate reads only what this call wrote.
describeMatrix('runc errors, kybernate only (runc\'s shim: stale log errors) now', (ctx) => {
  const scripts = new ScriptDir();
  let runc = '';
  beforeAll(() => { runc = findRunc(); });
  afterAll(() => scripts.remove());

  it('BinaryName: a failed pause reports the wrapper\'s stderr, not an earlier runc error left in the log', async () => {
    const { cd, rt } = ctx;
    const marker = `wrapper refuses pause ${process.pid}`;
    const wrapper = scripts.script(`fail-pause-${rt.kind}`, `${failOn('pause', marker)}\nexec ${runc} "$@"`);
    const id = ctx.id('wrap-pause');
    await createContainer(cd, rt.runtime, id, LOOP);
    await createTask(cd, id, runcOptions({ binaryName: wrapper }));
    await startTask(cd, id);
    // runc logs this exec's failure as an error in the container's log.json.
    const exec = await cd.ctr(['tasks', 'exec', '--exec-id', 'missing', id, '/nonexistent']);
    expect(exec.code).not.toBe(0);
    const pause = await cd.ctr(['tasks', 'pause', id]);
    expect(pause.code).not.toBe(0);
    expect(pause.stderr).toContain(marker);
  });
}, { runtimes: ['kybernate'] });
