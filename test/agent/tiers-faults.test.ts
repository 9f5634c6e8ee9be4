// Faults while snapshots move between tiers, end to end (containerd 2.1, the kybernate shim, CRIU, the agent):
// the agent SIGKILLed in the middle of a move (at a different point each round, drawn from a seeded PRNG),
// and a disk tier on a full filesystem. Whatever the moment, the snapshot is listed with at least one
// complete copy, nothing half-written is listed, what the killed move left is removed when the agent starts
// again, and the workload restores from it and continues.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COUNTER, checkpointDaemonOptions, counterPast, criuMissing, removeDaemonRuntimeDirs } from '../e2e/support/checkpoint';
import { removeContainer, runDetached, waitStatus } from '../e2e/support/ctr';
import { SHIM_RUNTIME, missingReason, startContainerd, type Containerd } from '../e2e/support/harness';
import { prng } from '../e2e/support/prng';
import { CLI, agentDir, kybernate, startAgent, tempDir, type Agent } from './support';

const lacks = missingReason('2.1') ?? criuMissing();
const suite = lacks ? describe.skip : describe;

/** COUNTER holding 24 MiB of random hex in the shell's memory: a move of its snapshot takes a while. */
const BIG_COUNTER = ['sh', '-c', `b=$(head -c 12582912 /dev/urandom | od -An -v -tx1 | tr -d ' \\\\n'); ${COUNTER[2]}`];

interface Snap { id: string; tiers: string[] }


suite(`snapshot tiers under faults${lacks ? ` (skipped: ${lacks})` : ''}`, () => {
  let cd: Containerd;
  let ns: string;
  const mounts: string[] = [];
  beforeAll(async () => {
    cd = await startContainerd('2.1', checkpointDaemonOptions());
    ns = cd.namespace;
  });
  afterAll(async () => {
    await cd?.stop();
    for (const m of mounts) spawnSync('umount', ['-l', m]);
    removeDaemonRuntimeDirs();
  });

  async function agentWith(storage: object, dir = agentDir()): Promise<Agent> {
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ storage }));
    return startAgent({ cd, dir });
  }
  const ls = async (a: Agent, id: string): Promise<Snap[]> => {
    const r = await kybernate(['snapshots', 'ls', id, '-n', ns, '--json', '--agent', a.socket]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    return (JSON.parse(r.stdout) as { snapshots: Snap[] }).snapshots;
  };

  it('the agent SIGKILLed mid-move, 4 times at seeded moments: one complete copy always listed; the workload restores', async () => {
    const chunks = tempDir('chunks');
    const storage = { disk: { dir: chunks, capacity: '10GiB' }, keepPerWorkload: 0 };
    let agent = await agentWith(storage);
    const dir = agent.dir;
    const id = `kill-${process.pid}`;
    const rand = prng(20261206);
    try {
      const { pid } = await runDetached(cd, SHIM_RUNTIME, id, BIG_COUNTER);
      let before = await counterPast(pid, 2);
      expect((await kybernate(['checkpoint', id, '-n', ns, '--exit', '--agent', agent.socket])).code).toBe(0);
      const [snap] = await ls(agent, id);
      for (let round = 0; round < 4; round++) {
        const to = round % 2 === 0 ? 'disk' : 'ram';
        const mv = spawn(process.execPath, [CLI, 'snapshots', 'mv', snap!.id, '--tier', to, '-n', ns, '--agent', agent.socket], { stdio: 'ignore' });
        await new Promise((r) => setTimeout(r, Math.floor(rand() * 400)));
        await agent.kill();
        await new Promise((r) => mv.once('exit', r));
        agent = await startAgent({ cd, dir });
        const [s] = await ls(agent, id);
        // Listed, with at least one complete copy; nothing half-written left beside the ram copies.
        expect(s?.id).toBe(snap!.id);
        expect(s!.tiers.length).toBeGreaterThan(0);
        const parent = join(dir, 'snapshots', ns, id);
        await new Promise((r) => setTimeout(r, 200)); // the orphan sweep runs just after `listening`
        expect(readdirSync(parent).filter((n) => n.includes('.unpack-') || n.startsWith('.deleting-'))).toEqual([]);
        const v = await kybernate(['snapshots', 'verify', s!.id, '--agent', agent.socket]);
        expect(v.code, v.stdout + v.stderr).toBe(0);
      }
      // The workload comes back from wherever its snapshot is, and counts on.
      expect((await kybernate(['restore', id, '-n', ns, '--agent', agent.socket])).code).toBe(0);
      const t = await waitStatus(cd, id, 'RUNNING');
      const after = await counterPast(t.pid, before.n);
      expect(after.token).toBe(before.token);
      before = after;
    } finally {
      await removeContainer(cd, id);
      await agent.stop();
    }
  });

  it('a disk tier on a full filesystem: the move fails with RESOURCE_EXHAUSTED, the snapshot stays whole in ram', async () => {
    const small = mkdtempSync(join(tmpdir(), 'kyb-tier-full-'));
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m,mode=0700', 'tmpfs', small]);
    expect(r.status, r.stderr?.toString()).toBe(0);
    mounts.push(small);
    const agent = await agentWith({ disk: { dir: join(small, 'chunks'), capacity: '1GiB' }, keepPerWorkload: 0 });
    const id = `full-${process.pid}`;
    try {
      await runDetached(cd, SHIM_RUNTIME, id, BIG_COUNTER);
      expect((await kybernate(['checkpoint', id, '-n', ns, '--exit', '--agent', agent.socket])).code).toBe(0);
      const [snap] = await ls(agent, id);
      const mv = await kybernate(['snapshots', 'mv', snap!.id, '--tier', 'disk', '--json', '--agent', agent.socket]);
      expect(mv.code).toBe(1);
      expect(JSON.parse(mv.stdout)).toMatchObject({ code: 'KYB_ERR_RESOURCE_EXHAUSTED' });
      expect((await ls(agent, id)).map((s) => s.tiers)).toEqual([['ram']]);
      expect(readdirSync(join(small, 'chunks', 'indexes'))).toEqual([]);
      expect((await kybernate(['snapshots', 'verify', snap!.id, '--agent', agent.socket])).code).toBe(0);
    } finally {
      await removeContainer(cd, id);
      await agent.stop();
    }
  });
});
