// The risk under the activator's checkpoint kind of sleep: a workload in its own network namespace (a CNI
// sandbox, joined by path) under the Kybernate runtime, checkpointed with exit and restored through the
// agent's code, keeps its listening socket. runc treats a namespace given by path as external: CRIU leaves
// it in place at dump and restores the socket into it. Against containerd 1.6/1.7/2.1.
//
// The workload is the demo's (src/cli/demo/workload.ts): busybox httpd whose CGI answers with a token drawn
// at boot and held only in httpd's memory. Same token after restore = the same process, restored; and the
// first request after restoreWorkload resolves is answered without any wait: the socket was restored
// listening, not bound again by a process starting up.
//
// What else is pinned down here (src/network/criu-lock.ts explains it): CRIU's network lock stays in the
// sandbox while the workload is at zero, so connections wait instead of being refused, and a workload
// started afresh there is unreachable until the lock is released; an open TCP connection to the workload
// makes the checkpoint fail (CRIU dumps no established connections without --tcp-established).
import { once } from 'node:events';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, expect, it } from 'vitest';
import { ContainerdClient } from '../../src/containerd/client';
import { checkpointWorkload, restoreWorkload, type CheckpointContext } from '../../src/agent/checkpoint';
import { SnapshotDirectory } from '../../src/agent/snapshots';
import { createSandbox, hasCriuLock, releaseCriuLock, removeSandbox } from '../../src/network/sandbox';
import { HELLO, HTTPD_COMMAND, WORKLOAD_PORT } from '../../src/cli/demo/workload';
import { describeMatrix } from '../e2e/support/matrix';
import { checkpointDaemonOptions, criuMissing, removeDaemonRuntimeDirs } from '../e2e/support/checkpoint';
import { alive, runDetached, task, waitStatus } from '../e2e/support/ctr';
import { get, getFailure, getWhenUp, networkMissing, privateNetwork } from './support';

const tmp = mkdtempSync(join(tmpdir(), 'kyb-net-ck-'));
afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
  removeDaemonRuntimeDirs();
});
const p = privateNetwork(2);

/** The network namespace of `pid` is the one at `netns` (same device and inode). */
function inNetns(pid: number, netns: string): boolean {
  const a = statSync(`/proc/${pid}/ns/net`);
  const b = statSync(netns);
  return a.ino === b.ino && a.dev === b.dev;
}

/** The CGI's answer for `query`: the query echoed and the boot token. */
async function echo(ip: string, query: string, timeoutMs?: number): Promise<{ query: string; token: string }> {
  const r = await get(`http://${ip}:${WORKLOAD_PORT}/cgi-bin/echo?${query}`, timeoutMs);
  expect(r.status).toBe(200);
  const m = /^query=(\S*) token=([0-9a-f-]{36})\n$/.exec(r.body);
  if (!m) throw new Error(`unexpected CGI answer: ${JSON.stringify(r.body)}`);
  return { query: m[1], token: m[2] };
}

describeMatrix('workload in a network sandbox: checkpoint --exit and restore', (m) => {
  let client: ContainerdClient;
  let ctx: CheckpointContext;
  beforeEach(() => {
    client = new ContainerdClient({ address: m.cd.address });
    ctx = { containerd: client, containerdState: m.cd.state, snapshots: new SnapshotDirectory(mkdtempSync(join(tmp, 'snaps-'))) };
  });
  afterEach(() => client.close());

  it('keeps its listening socket: answered right after restore by the same process; while at zero, connections wait', async () => {
    const { cd, rt } = m;
    const ns = cd.namespace;
    const sandbox = await createSandbox(p.name(`v${m.version.replace('.', '')}`), p.net);
    try {
      const id = m.id('web');
      const { pid } = await runDetached(cd, rt.runtime, id, [...HTTPD_COMMAND], ['--with-ns', `network:${sandbox.netns}`]);
      expect(inNetns(pid, sandbox.netns)).toBe(true);
      const url = `http://${sandbox.ip}:${WORKLOAD_PORT}`;
      expect(await getWhenUp(`${url}/`)).toEqual({ status: 200, body: HELLO });
      const boot = await echo(sandbox.ip, 'first=1');
      expect(boot.query).toBe('first=1');

      // Round 1: at zero, CRIU's lock drops SYNs (a timeout, not a refusal); restore lifts it.
      const ck = await checkpointWorkload(ctx, { namespace: ns, id, exit: true });
      expect(ck.snapshot.exited).toBe(true);
      expect(await task(cd, id)).toBeUndefined();
      expect(alive(pid)).toBe(false);
      expect(await hasCriuLock(sandbox.name)).toBe(true);
      expect(await getFailure(`${url}/`, 1_500)).toBe('ETIMEDOUT');
      await restoreWorkload(ctx, { namespace: ns, id });
      expect(await hasCriuLock(sandbox.name)).toBe(false);
      // No polling: the restored socket listens before Start returns.
      expect(await echo(sandbox.ip, 'round=1', 5_000)).toEqual({ query: 'round=1', token: boot.token });
      const t1 = await waitStatus(cd, id, 'RUNNING');
      expect(inNetns(t1.pid, sandbox.netns)).toBe(true);

      // Round 2: a request sent while at zero waits in TCP (SYN retransmits) and is answered once restored.
      await checkpointWorkload(ctx, { namespace: ns, id, exit: true });
      expect(alive(t1.pid)).toBe(false);
      const waiting = echo(sandbox.ip, 'waited=1', 15_000);
      await new Promise((r) => setTimeout(r, 200));
      await restoreWorkload(ctx, { namespace: ns, id });
      expect(await waiting).toEqual({ query: 'waited=1', token: boot.token });
      expect((await get(`${url}/`)).body).toBe(HELLO);
    } finally {
      await removeSandbox(sandbox.name, p.net);
    }
  });

  it('a fresh start in a sandbox whose workload was left checkpointed needs the lock released; an open connection fails the checkpoint', async () => {
    const { cd, rt } = m;
    const ns = cd.namespace;
    const sandbox = await createSandbox(p.name(`f${m.version.replace('.', '')}`), p.net);
    try {
      const url = `http://${sandbox.ip}:${WORKLOAD_PORT}`;
      const old = m.id('old');
      await runDetached(cd, rt.runtime, old, [...HTTPD_COMMAND], ['--with-ns', `network:${sandbox.netns}`]);
      await getWhenUp(`${url}/`);
      const before = await echo(sandbox.ip, 'a');

      // CRIU refuses established TCP connections (no --tcp-established): the workload keeps running.
      const conn = net.connect(WORKLOAD_PORT, sandbox.ip);
      await once(conn, 'connect');
      await expect(checkpointWorkload(ctx, { namespace: ns, id: old, exit: true }))
        .rejects.toMatchObject({ message: expect.stringContaining('Connected TCP socket') });
      expect(await echo(sandbox.ip, 'b')).toEqual({ query: 'b', token: before.token });
      conn.destroy();
      await new Promise((r) => setTimeout(r, 200));

      await checkpointWorkload(ctx, { namespace: ns, id: old, exit: true });
      await cd.ctrOk(['containers', 'rm', old]);
      const fresh = m.id('fresh');
      await runDetached(cd, rt.runtime, fresh, [...HTTPD_COMMAND], ['--with-ns', `network:${sandbox.netns}`]);
      await new Promise((r) => setTimeout(r, 500));
      expect(await getFailure(`${url}/`, 1_500)).toBe('ETIMEDOUT');
      expect(await releaseCriuLock(sandbox.name)).toBe(true);
      expect(await releaseCriuLock(sandbox.name)).toBe(false);
      expect((await getWhenUp(`${url}/`)).body).toBe(HELLO);
      expect((await echo(sandbox.ip, 'c')).token).not.toBe(before.token);
    } finally {
      await removeSandbox(sandbox.name, p.net);
    }
  });
}, {
  runtimes: ['kybernate'],
  start: checkpointDaemonOptions,
  skip: () => criuMissing() ?? networkMissing(),
});
