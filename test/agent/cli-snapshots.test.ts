// `kybernate checkpoint|restore|snapshots` as a user runs them: the bundled CLI (dist/kybernate.cjs) against
// the agent binary, with real containerd 1.6/1.7/2.1, the kybernate shim and CRIU. Scale to zero and back
// (the counter goes on with the same token), a second snapshot, rm by prefix; the command line's usage
// errors (exit 2), an operation the agent refuses (exit 1 and its code), and no agent at all (exit 3).
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Status } from '../../src/errors';
import { COUNTER, checkpointDaemonOptions, counterPast, criuMissing } from '../e2e/support/checkpoint';
import { LOOP, runDetached, task, waitStatus } from '../e2e/support/ctr';
import { describeMatrix } from '../e2e/support/matrix';
import { bundle, kybernate, startAgent, tempDir, type Agent } from './support';

beforeAll(() => bundle(), 120_000);

const HEX12 = '[0-9a-f]{12}';
const SIZE = '\\d+(?:\\.\\d)? (?:B|KiB|MiB|GiB)';

interface Snap { id: string; namespace: string; containerId: string; path: string; sizeBytes: number; gpuMemoryBytes: number; exited: boolean }

describe('kybernate checkpoint, restore and snapshots: the command line', () => {
  it('usage errors exit 2 with the reason and the usage', async () => {
    const cases: Array<[string[], string]> = [
      [['checkpoint'], 'checkpoint: exactly one container id, got 0'],
      [['checkpoint', '--exit'], 'checkpoint: exactly one container id, got 0'],
      [['restore'], 'restore: exactly one container id, got 0'],
      [['restore', 'a', 'b'], 'restore: exactly one container id, got 2'],
      [['checkpoint', 'web', '--bogus'], "Unknown option '--bogus'"],
      [['restore', 'web', '--exit'], "Unknown option '--exit'"],
      [['restore', 'web', '--snapshot', 'xyz'], 'invalid snapshot "xyz"'],
      [['checkpoint', '../etc'], 'invalid container id "../etc"'],
      [['checkpoint', 'web', '--timeout', '0'], '--timeout must be a positive number of seconds, not 0'],
      [['snapshots'], 'snapshots: give a subcommand, ls, rm, mv, pin, verify or gc'],
      [['snapshots', 'list'], 'snapshots: unknown subcommand list (ls, rm, mv, pin, verify or gc)'],
      [['snapshots', 'ls', '--bogus'], "Unknown option '--bogus'"],
      [['snapshots', 'ls', '-A', 'web'], 'snapshots ls: a container id needs its namespace (-n), not -A'],
      [['snapshots', 'ls', '-n', 'x', '-A'], 'snapshots ls: -n and --all-namespaces exclude each other'],
      [['snapshots', 'rm'], 'snapshots rm: exactly one snapshot (its id or a hex prefix), got 0'],
      [['snapshots', 'rm', 'abc'], 'invalid snapshot "abc"'],
    ];
    for (const [args, msg] of cases) {
      const r = await kybernate(args);
      expect({ args, code: r.code, stdout: r.stdout }).toEqual({ args, code: 2, stdout: '' });
      expect(r.stderr).toContain(`kybernate: ${msg}`);
      expect(r.stderr).toContain(`usage: kybernate ${args[0]}`);
    }
  });

  it('every command exits 3 with the same clear message when no agent answers at the socket', async () => {
    const sock = join(tempDir('no-agent'), 'agent.sock');
    const want = `the kybernate agent is not running (no socket at ${sock}): start it with \`kybernate-agent\` or \`systemctl start kybernate-agent\``;
    for (const args of [['checkpoint', 'web'], ['checkpoint', 'web', '--exit'], ['restore', 'web'], ['restore', 'web', '--snapshot', 'abcd'],
      ['snapshots', 'ls'], ['snapshots', 'ls', '-A'], ['snapshots', 'rm', 'abcd'], ['snapshots', 'rm', 'abcd', '-A']]) {
      expect(await kybernate([...args, '--agent', sock])).toEqual({ code: 3, stdout: '', stderr: `kybernate: ${want}\n` });
      const env = await kybernate([...args, '--json'], { KYBERNATE_AGENT: sock });
      expect({ args, code: env.code, stderr: env.stderr }).toEqual({ args, code: 3, stderr: '' });
      expect(JSON.parse(env.stdout)).toMatchObject({ ok: false, agent: sock, code: 'KYB_ERR_UNAVAILABLE', status: Status.UNAVAILABLE, error: want });
    }
  });
});

describeMatrix('kybernate checkpoint, restore and snapshots through the agent', (ctx) => {
  let agent: Agent;
  beforeAll(async () => {
    agent = await startAgent({ cd: ctx.cd });
  });
  afterAll(async () => {
    await agent?.stop();
  });
  const cli = (...args: string[]) => kybernate([...args, '-n', ctx.cd.namespace, '--agent', agent.socket]);
  const json = <T>(r: { code: number; stdout: string; stderr: string }): T => {
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    return JSON.parse(r.stdout) as T;
  };
  const listed = async (id: string): Promise<Snap[]> => json<{ ok: boolean; snapshots: Snap[] }>(await cli('snapshots', 'ls', id, '--json')).snapshots;

  it('checkpoint --exit → ps CHECKPOINTED → restore (the counter goes on) → a second snapshot → rm by prefix', async () => {
    const { cd } = ctx;
    const ns = cd.namespace;
    const id = ctx.id('cli');
    const { pid } = await runDetached(cd, ctx.rt.runtime, id, COUNTER);
    const before = await counterPast(pid, 1);

    // Scale to zero.
    const ck = json<Record<string, unknown> & { snapshot: Snap; steps: Array<{ step: string }> }>(await cli('checkpoint', id, '--exit', '--json'));
    expect(ck).toMatchObject({ ok: true, id, namespace: ns, agent: agent.socket, exited: true, state: 'CHECKPOINTED',
      snapshot: { namespace: ns, containerId: id, exited: true }, workload: { id, state: 'CHECKPOINTED', pid: 0 } });
    expect(ck.snapshot.id).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(ck.snapshot.sizeBytes).toBeGreaterThan(0);
    expect(ck.steps.map((s) => s.step)).toEqual(['checkpoint', 'delete-task']);
    expect(await task(cd, id)).toBeUndefined();
    const first = ck.snapshot.id;
    const short1 = first.slice('sha256:'.length, 'sha256:'.length + 12);

    const ps = json<{ workloads: Array<Record<string, unknown>> }>(await cli('ps', '--json'));
    expect(ps.workloads.find((w) => w.id === id)).toMatchObject({ state: 'CHECKPOINTED', pid: 0, snapshot: { id: first, exited: true } });
    expect((await listed(id)).map((s) => s.id)).toEqual([first]);
    const all = json<{ snapshots: Snap[] }>(await kybernate(['snapshots', 'ls', '-A', '--json', '--agent', agent.socket]));
    expect(all.snapshots.find((s) => s.id === first)).toMatchObject({ namespace: ns, containerId: id, exited: true });

    // Back: the same process (its token), counting on.
    const r = await cli('restore', id);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const m = new RegExp(`^restored container ${id} from snapshot ${short1}: RUNNING, pid (\\d+) \\(\\d+\\.\\d ms\\)\n  STEP `).exec(r.stdout);
    expect(m, r.stdout).not.toBeNull();
    expect(r.stdout).toMatch(/^ {2}start +- +\d+\.\d ms$/m);
    const t = await waitStatus(cd, id, 'RUNNING');
    expect(Number(m![1])).toBe(t.pid);
    expect((await counterPast(t.pid, before.n)).token).toBe(before.token);

    // A leave-running checkpoint: a second snapshot, the task runs on.
    const ck2 = await cli('checkpoint', id);
    expect(ck2.stderr).toBe('');
    expect(ck2.code).toBe(0);
    const m2 = new RegExp(`^checkpointed container ${id}: the task keeps running \\(\\d+\\.\\d ms\\)\n` +
      `snapshot (${HEX12}) \\((sha256:[0-9a-f]{64})\\), ${SIZE}, GPU memory saved: none\n  STEP `).exec(ck2.stdout);
    expect(m2, ck2.stdout).not.toBeNull();
    const second = m2![2]!;
    expect(second.slice('sha256:'.length, 'sha256:'.length + 12)).toBe(m2![1]);
    expect((await task(cd, id))?.status).toBe('RUNNING');
    expect((await listed(id)).map((s) => s.id)).toEqual([first, second]);

    const table = await cli('snapshots', 'ls');
    expect(table.code).toBe(0);
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NAMESPACE\s+ID\s+SNAPSHOT\s+CREATED\s+TIER\s+SIZE\s+STORED\s+GPU MEM\s+EXITED$/);
    const rows = lines.filter((l) => l.split(/\s+/)[1] === id);
    expect(rows).toHaveLength(2);
    expect(rows[0]).toMatch(new RegExp(`^${ns}\\s+${id}\\s+${short1}\\s+\\d+[smhd] ago\\s+ram\\s+${SIZE}\\s+${SIZE}\\s+-\\s+yes$`));
    expect(rows[1]).toMatch(new RegExp(`^${ns}\\s+${id}\\s+${m2![1]}\\s+\\d+[smhd] ago\\s+ram\\s+${SIZE}\\s+${SIZE}\\s+-\\s+no$`));

    // rm is scoped to the namespace: another one does not have it.
    const elsewhere = await kybernate(['snapshots', 'rm', short1, '-n', 'kyb-no-such-ns', '--agent', agent.socket, '--json']);
    expect(elsewhere.code).toBe(1);
    expect(JSON.parse(elsewhere.stdout)).toMatchObject({ ok: false, code: 'KYB_ERR_NOT_FOUND', status: Status.NOT_FOUND });
    expect((await listed(id)).map((s) => s.id)).toEqual([first, second]);

    const rm = await cli('snapshots', 'rm', short1);
    expect(rm.stderr).toBe('');
    expect(rm.code).toBe(0);
    expect(rm.stdout).toMatch(new RegExp(`^removed snapshot ${short1} \\(${first}\\) of ${ns}/${id}: ${SIZE}, created \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z\n$`));
    expect((await listed(id)).map((s) => s.id)).toEqual([second]);
    const again = await cli('snapshots', 'rm', short1);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain(`no snapshot ${short1} in namespace ${ns}`);

    // The last one by its full id, as JSON.
    const rm2 = json<{ ok: boolean; removed: Snap }>(await cli('snapshots', 'rm', second, '--json'));
    expect(rm2).toMatchObject({ ok: true, namespace: ns, removed: { id: second, containerId: id, exited: false } });
    expect(await listed(id)).toEqual([]);
  });

  it('restore of a workload whose task runs exits 1 with KYB_ERR_FAILED_PRECONDITION, and the task runs on', async () => {
    const { cd } = ctx;
    const id = ctx.id('busy');
    const t = await runDetached(cd, ctx.rt.runtime, id, LOOP);
    const r = await cli('restore', id, '--json');
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({
      ok: false, id, namespace: cd.namespace, agent: agent.socket, code: 'KYB_ERR_FAILED_PRECONDITION', status: Status.FAILED_PRECONDITION,
      error: `cannot restore ${cd.namespace}/${id}: its task is running`,
    });
    const text = await cli('restore', id);
    expect(text).toEqual({ code: 1, stdout: '', stderr: `kybernate: cannot restore ${cd.namespace}/${id}: its task is running\n` });
    expect(await task(cd, id)).toMatchObject({ pid: t.pid, status: 'RUNNING' });
  });
}, { runtimes: ['kybernate'], start: checkpointDaemonOptions, skip: () => criuMissing() });
