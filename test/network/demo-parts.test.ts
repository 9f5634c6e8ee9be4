// The building blocks of `kybernate demo` (src/cli/demo): the containerd it finds or starts (a private one
// from what `make setup` installed, of each installed version; refused while another demo owns it; taken
// over after a killed demo; the local one when it answers and can start our shim, not otherwise) and the
// HTTP workload in a network sandbox (answers; removed while running, checkpointed, gone; started afresh in
// a sandbox a checkpoint left locked).
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkpointWorkload } from '../../src/agent/checkpoint';
import { SnapshotDirectory } from '../../src/agent/snapshots';
import { ContainerdClient } from '../../src/containerd/client';
import { findOrStartContainerd, type DemoContainerd } from '../../src/cli/demo/containerd';
import { ctrOk, lines } from '../../src/cli/demo/ctr';
import { identity } from '../../src/cli/demo/private-containerd';
import { HELLO, startDemoWorkload, taskStatus } from '../../src/cli/demo/workload';
import { createSandbox } from '../../src/network/sandbox';
import { CRIU_DAEMON_ENV, criuMissing } from '../e2e/support/checkpoint';
import { KYBERNATE_SHIM_BIN } from '../e2e/support/matrix';
import { REPO_ROOT, binDir, missingReason, startContainerd } from '../e2e/support/harness';
import { get, getWhenUp, networkMissing, privateNetwork, tempDir } from './support';

const NS = 'kyb-demo-parts';
const missing = networkMissing() ?? criuMissing() ?? missingReason('2.1')
  ?? (existsSync(KYBERNATE_SHIM_BIN) ? undefined : 'bin/containerd-shim-kybernate-v2 not built (make build)');

/** Fresh run/state directories for one private containerd. */
function dirs(): { runDir: string; stateDir: string } {
  const base = tempDir('kyb-demo-');
  return { runDir: join(base, 'run'), stateDir: join(base, 'lib') };
}

const gone = (pid: number): boolean => identity(pid) === undefined;

/** The CGI's boot token. */
async function token(upstream: string): Promise<string> {
  const r = await get(`http://${upstream}/cgi-bin/echo?t=1`);
  return /token=(\S+)/.exec(r.body)?.[1] ?? '';
}

describe.skipIf(missing !== undefined)(`demo building blocks${missing ? ` (${missing})` : ''}`, () => {
  const p = privateNetwork(4);

  it('a private containerd of each installed version: started when none answers, refused twice, stop() leaves nothing', async () => {
    const versions = [['2.1', join(REPO_ROOT, '.deps/containerd-2.1/bin/containerd')], ['1.7', join(REPO_ROOT, '.deps/containerd-1.7/bin/containerd')],
      ['1.6', '/usr/bin/containerd']].filter(([, bin]) => existsSync(bin!));
    for (const [v, bin] of versions) {
      const d = dirs();
      const cd = await findOrStartContainerd({ address: join(d.runDir, 'none.sock'), containerd: bin, ...d });
      try {
        expect(cd).toMatchObject({ private: true, version: expect.stringMatching(new RegExp(`^${v!.replace('.', '\\.')}\\.`)),
          address: join(d.runDir, 'containerd', 'containerd.sock'), state: join(d.runDir, 'containerd', 'state'),
          root: join(d.stateDir, 'containerd', 'root'), ctr: join(bin!, '..', 'ctr'), note: expect.stringContaining('no containerd at') });
        const c = new ContainerdClient({ address: cd.address });
        expect((await c.version()).version).toContain(v);
        c.close();
        await expect(findOrStartContainerd({ private: true, containerd: bin, ...d }))
          .rejects.toMatchObject({ code: 'KYB_ERR_ALREADY_EXISTS', message: expect.stringContaining(`pid ${process.pid}`) });
      } finally {
        await cd.stop();
      }
      expect(gone((cd as unknown as { pid: number }).pid)).toBe(true);
      expect(existsSync(join(d.runDir, 'containerd'))).toBe(false);
      expect(existsSync(join(d.stateDir, 'containerd'))).toBe(false);
      await cd.stop();
    }
    expect(versions.map(([v]) => v)).toContain('2.1');
  });

  it('the workload: answers; removed while running, checkpointed or gone; a fresh start after a checkpoint answers', async () => {
    const cd = await findOrStartContainerd({ private: true, env: CRIU_DAEMON_ENV, ...dirs() });
    const client = new ContainerdClient({ address: cd.address });
    try {
      const sandbox = await createSandbox(p.name('w'), p.net);
      const logFile = join(tempDir('kyb-demo-log-'), 'web.log');
      await expect(startDemoWorkload(cd, { namespace: NS, id: 'web', sandbox, logFile: 'relative.log' })).rejects.toMatchObject({ code: 'KYB_ERR_INVALID_ARGUMENT' });
      const w = await startDemoWorkload(cd, { namespace: NS, id: 'web', sandbox, logFile });
      expect(existsSync(logFile)).toBe(true);
      expect(w).toMatchObject({ id: 'web', namespace: NS, upstream: `${sandbox.ip}:8080` });
      expect((await get(`http://${w.upstream}/`)).body).toBe(HELLO);
      const first = await token(w.upstream);
      expect(first).toMatch(/^[0-9a-f-]{36}$/);
      expect((await client.container(NS, 'web')).runtime).toBe('io.containerd.kybernate.v2');
      await expect(startDemoWorkload(cd, { namespace: NS, id: 'web', sandbox })).rejects.toMatchObject({ code: 'KYB_ERR_ALREADY_EXISTS' });

      // Checkpointed (no task, CRIU's lock in the sandbox), then removed; removing again is no error.
      const ctx = { containerd: client, containerdState: cd.state, snapshots: new SnapshotDirectory(tempDir('kyb-demo-snaps-')) };
      await checkpointWorkload(ctx, { namespace: NS, id: 'web', exit: true });
      expect(await taskStatus(cd, NS, 'web')).toBeUndefined();
      await w.remove();
      expect(lines(await ctrOk(cd, NS, ['containers', 'ls', '-q']))).toEqual([]);
      await w.remove();

      // Afresh in the same sandbox: the lock is released, a new process answers with a new token.
      const again = await startDemoWorkload(cd, { namespace: NS, id: 'web', sandbox });
      expect(await token(again.upstream)).not.toBe(first);
      const replaced = await startDemoWorkload(cd, { namespace: NS, id: 'web', sandbox, replace: true });
      const t = await taskStatus(cd, NS, 'web');
      expect(t?.status).toBe('RUNNING');
      expect((await getWhenUp(`http://${replaced.upstream}/`)).body).toBe(HELLO);

      // stop() takes the running workload down with the containerd.
      await cd.stop();
      expect(gone(t!.pid)).toBe(true);
    } finally {
      client.close();
      await cd.stop();
    }
  });

  it('after a killed demo: its containerd is stopped, a new one adopts its containers, stop() removes them', async () => {
    const d = dirs();
    const old = await findOrStartContainerd({ private: true, ...d }) as DemoContainerd & { pid: number };
    const sandbox = await createSandbox(p.name('left'), p.net);
    await startDemoWorkload(old, { namespace: NS, id: 'left', sandbox });
    const t = await taskStatus(old, NS, 'left');
    // The demo that owned it is gone (a pid that never had this start time).
    writeFileSync(join(d.runDir, 'containerd', 'owner.json'), JSON.stringify({ demo: `${process.pid} 1`, containerd: identity(old.pid) }));
    const cd = await findOrStartContainerd({ private: true, ...d }) as DemoContainerd & { pid: number };
    try {
      expect(gone(old.pid)).toBe(true);
      expect(cd.pid).not.toBe(old.pid);
      expect(lines(await ctrOk(cd, NS, ['containers', 'ls', '-q']))).toEqual(['left']);
      expect(await taskStatus(cd, NS, 'left')).toEqual(t);
    } finally {
      await cd.stop();
    }
    expect(gone(t!.pid)).toBe(true);
    expect(existsSync(join(d.runDir, 'containerd'))).toBe(false);
  });

  it('the local containerd: used when it answers and can start our shim; otherwise a private one, saying why', async () => {
    const local = await startContainerd('2.1', { namespace: NS });
    try {
      const cd = await findOrStartContainerd({ address: local.address });
      expect(cd).toMatchObject({ private: false, address: local.address, state: local.state, root: local.root,
        ctr: join(binDir('2.1'), 'ctr'), version: expect.stringMatching(/^2\.1\./) });
      expect(cd.note).toBeUndefined();
      await cd.stop();
      expect((await new ContainerdClient({ address: local.address }).version()).version).toMatch(/2\.1/);
    } finally {
      await local.stop();
    }
    // Its PATH without bin/: it could not start containerd-shim-kybernate-v2.
    const blind = await startContainerd('2.1', { namespace: NS, env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } });
    try {
      const cd = await findOrStartContainerd({ address: blind.address, ...dirs() });
      try {
        expect(cd.private).toBe(true);
        expect(cd.note).toContain(`the containerd at ${blind.address} cannot start containerd-shim-kybernate-v2: it is not on its PATH (/usr/sbin:/usr/bin:/sbin:/bin)`);
      } finally {
        await cd.stop();
      }
    } finally {
      await blind.stop();
    }
  });
});
