// Snapshot tiers through the agent and the CLI, end to end: containerd 2.1, the kybernate shim, CRIU, and a
// real S3 server (Ceph radosgw, dbstore backend) for the s3 tier. A counter container is checkpointed
// straight into the disk tier (content-defined chunks), restored from there (promoted into ram first: the
// counter continues), moved ram → s3 → disk, and a second checkpoint of the same container shares most of
// its chunks with the first. The agent restarted lists the chunk tiers again; a corrupted chunk is refused,
// named, and leaves no task. One containerd version: tiers sit below the agent's checkpoint/restore, whose
// containerd matrix is covered by checkpoint.test.ts.
import { readdirSync, writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COUNTER, checkpointDaemonOptions, counterPast, criuMissing, removeDaemonRuntimeDirs } from '../e2e/support/checkpoint';
import { removeContainer, runDetached, task, waitFor, waitStatus } from '../e2e/support/ctr';
import { SHIM_RUNTIME, missingReason, startContainerd, type Containerd } from '../e2e/support/harness';
import { s3MissingReason, startS3, type S3Server } from '../harness/s3';
import { agentDir, kybernate, startAgent, tempDir, type Agent } from './support';

const lacks = missingReason('2.1') ?? criuMissing() ?? s3MissingReason();
const suite = lacks ? describe.skip : describe;

/**
 * COUNTER beside a process that holds 8 MiB of random bytes (hex) in its memory and otherwise only sleeps: its
 * pages are the same from one checkpoint to the next, as a model's weights would be, so two snapshots of the
 * container share most chunks. (Held by the counting shell itself, its heap would churn with every loop.)
 */
const BIG_COUNTER = ['sh', '-c',
  `(b=$(head -c 4194304 /dev/urandom | od -An -v -tx1 | tr -d ' \\n'); while :; do sleep 3600; done) & ${COUNTER[2]}`];

interface Snap { id: string; containerId: string; tier: string; tiers: string[]; sizeBytes: number; storedBytes: number }

suite(`snapshot tiers through the agent${lacks ? ` (skipped: ${lacks})` : ''}`, () => {
  let cd: Containerd;
  let s3: S3Server;
  let agent: Agent;
  let dir: string;
  let chunks: string;
  const id = `tiers-${process.pid}`;
  let ns: string;
  const cli = async (...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> =>
    kybernate([...args, '--agent', agent.socket]);
  const ls = async (): Promise<Snap[]> => {
    const r = await cli('snapshots', 'ls', id, '-n', ns, '--json');
    expect(r.code, r.stderr).toBe(0);
    return (JSON.parse(r.stdout) as { snapshots: Snap[] }).snapshots;
  };

  beforeAll(async () => {
    cd = await startContainerd('2.1', checkpointDaemonOptions());
    ns = cd.namespace;
    s3 = await startS3();
    dir = agentDir();
    chunks = tempDir('chunks');
    writeFileSync(join(dir, 'config.json'), JSON.stringify({
      storage: {
        disk: { dir: chunks, capacity: '10GiB' },
        s3: { endpoint: s3.endpoint, region: s3.region, bucket: s3.bucket, accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey, capacity: 'unlimited' },
      },
    }));
    agent = await startAgent({ cd, dir });
  });
  afterAll(async () => {
    await agent?.stop();
    if (cd) await removeContainer(cd, id);
    await cd?.stop();
    await s3?.stop();
    removeDaemonRuntimeDirs();
  });

  it('checkpoint --exit --tier disk: chunks on disk, no plain copy; restore brings it back and the counter continues', async () => {
    const { pid } = await runDetached(cd, SHIM_RUNTIME, id, BIG_COUNTER);
    const before = await counterPast(pid, 2);
    const ck = await cli('checkpoint', id, '-n', ns, '--exit', '--tier', 'disk', '--json');
    expect(ck.code, ck.stdout + ck.stderr).toBe(0);
    const out = JSON.parse(ck.stdout) as { snapshot: Snap; steps: Array<{ step: string }> };
    expect(out.snapshot.tiers).toEqual(['disk']);
    expect(out.steps.map((s) => s.step)).toContain('move-disk');
    expect(readdirSync(join(dir, 'snapshots', ns, id)).filter((n) => !n.startsWith('.'))).toEqual([]); // no plain copy
    const [s] = await ls();
    expect(s).toMatchObject({ id: out.snapshot.id, tiers: ['disk'] });
    expect(s!.storedBytes).toBeGreaterThan(0);
    // Its chunks: the files' bytes (CRIU images compress nothing here) and the manifest's.
    expect(s!.storedBytes).toBeLessThanOrEqual(s!.sizeBytes + 64 * 1024);

    const r = await cli('restore', id, '-n', ns, '--json');
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { steps: Array<{ step: string }> }).steps[0]!.step).toBe('promote-disk');
    const t = await waitStatus(cd, id, 'RUNNING');
    const after = await counterPast(t.pid, before.n);
    expect(after.token).toBe(before.token);
    // The promotion keeps the disk copy: the snapshot is in both tiers now.
    expect((await ls())[0]!.tiers).toEqual(['ram', 'disk']);
  });

  it('mv ram → s3 → disk; a second checkpoint shares most chunks; the agent restarted lists the tiers again', async () => {
    const first = (await ls())[0]!;
    // The first snapshot down to s3 only, with the agent's progress events watched meanwhile.
    const client = agent.client();
    const stream = client.events({ namespace: ns });
    const progress: Array<{ done: number; total: number; snapshot: string }> = [];
    stream.on((e) => {
      if (e.progress?.operation === 'move') progress.push({ done: Number(e.progress.bytesDone), total: Number(e.progress.bytesTotal), snapshot: e.progress.snapshot ?? '' });
    });
    await stream.ready;
    const toS3 = await cli('snapshots', 'mv', first.id, '--tier', 's3', '-n', ns, '--json');
    expect(toS3.code, toS3.stderr).toBe(0);
    await waitFor('the last progress event', () => progress.some((x) => x.done === x.total && x.total > 0));
    expect(progress.every((x) => x.snapshot === first.id && x.done <= x.total)).toBe(true);
    stream.close();
    client.close();
    expect((await ls()).find((x) => x.id === first.id)!.tiers).toEqual(['s3']);

    // A second checkpoint into disk: its new chunks are a fraction of its size (the first's chunks are in s3, not
    // on disk, so bring the first back to disk to compare within one store).
    const back = await cli('snapshots', 'mv', first.id, '--tier', 'disk', '-n', ns, '--json');
    expect(back.code, back.stdout + back.stderr).toBe(0);
    const ck = await cli('checkpoint', id, '-n', ns, '--exit', '--tier', 'disk', '--json');
    expect(ck.code, ck.stdout + ck.stderr).toBe(0);
    const out = JSON.parse(ck.stdout) as { snapshot: Snap; steps: Array<{ step: string; bytes?: number }> };
    const moved = out.steps.find((x) => x.step === 'move-disk')!;
    expect(moved.bytes).toBeLessThan(out.snapshot.sizeBytes / 2);

    await agent.stop();
    agent = await startAgent({ cd, dir });
    const all = await ls();
    expect(all.map((x) => x.tiers)).toEqual([['disk'], ['disk']]);
  });

  it('verify reads every copy; rm then gc frees the chunks only the removed snapshot held', async () => {
    const [first, second] = await ls();
    const v = await cli('snapshots', 'verify', second!.id, '--json');
    expect(v.code, v.stdout + v.stderr).toBe(0);
    expect(JSON.parse(v.stdout)).toMatchObject({ verified: ['disk'] });
    const count = (): number => readdirSync(join(chunks, 'chunks')).reduce((n, d) => n + readdirSync(join(chunks, 'chunks', d)).length, 0);
    const before = count();
    expect((await cli('snapshots', 'rm', first!.id, '-n', ns)).code).toBe(0);
    // Within the grace period nothing goes; with a 1 s grace after a pause, the removed snapshot's own chunks do.
    const kept = await cli('snapshots', 'gc', '--json');
    expect(JSON.parse(kept.stdout).tiers.find((t: { tier: string }) => t.tier === 'disk')).toMatchObject({ deletedChunks: 0 });
    await new Promise((r) => setTimeout(r, 1500));
    const gc = await cli('snapshots', 'gc', '--grace', '1', '--json');
    expect(gc.code, gc.stdout + gc.stderr).toBe(0);
    const disk = (JSON.parse(gc.stdout) as { tiers: Array<{ tier: string; deletedChunks: number; freedBytes: number }> }).tiers.find((t) => t.tier === 'disk')!;
    expect(disk.deletedChunks).toBeGreaterThan(0);
    expect(count()).toBe(before - disk.deletedChunks);
    // The remaining snapshot is whole.
    expect((await cli('snapshots', 'verify', second!.id)).code).toBe(0);
  });

  it('a corrupted chunk: restore refused naming it, no task left, the snapshot still listed', async () => {
    const newest = (await ls()).at(-1)!;
    const index = JSON.parse(readFileSync(join(chunks, 'indexes', `${newest.id.slice('sha256:'.length)}.json`), 'utf8')) as { files: Array<{ path: string; size: number; chunks: Array<{ digest: string }> }> };
    const big = [...index.files].sort((a, b) => b.size - a.size)[0]!;
    const digest = big.chunks[0]!.digest;
    // Every snapshot referencing it is hit: corrupt it in place.
    const file = join(chunks, 'chunks', digest.slice(0, 2), digest);
    const data = readFileSync(file);
    data[0] = data[0]! ^ 0xff;
    writeFileSync(file, data);
    const r = await cli('restore', id, '-n', ns, '--json');
    expect(r.code).toBe(1);
    const err = JSON.parse(r.stdout) as { code: string; error: string };
    expect(err.code).toBe('KYB_ERR_CHECKPOINT_INVALID');
    expect(err.error).toContain(`chunk ${digest}`);
    expect(await task(cd, id)).toBeUndefined();
    expect((await ls()).map((x) => x.id)).toContain(newest.id);
  });

  it('the storage policy on its own: over ram capacity → demoted to disk; retention keeps the newest; a pin holds', async () => {
    // A second agent whose ram tier holds 1 KiB and which keeps one snapshot per workload.
    const dir2 = agentDir();
    const chunks2 = tempDir('chunks');
    writeFileSync(join(dir2, 'config.json'), JSON.stringify({
      storage: { ram: { capacity: '1KiB' }, disk: { dir: chunks2, capacity: '10GiB' }, keepPerWorkload: 1 },
    }));
    const a2 = await startAgent({ cd, dir: dir2 });
    const id2 = `hsm-${process.pid}`;
    const ls2 = async (): Promise<Snap[]> => {
      const r = await kybernate(['snapshots', 'ls', id2, '-n', ns, '--json', '--agent', a2.socket]);
      return (JSON.parse(r.stdout) as { snapshots: Snap[] }).snapshots;
    };
    try {
      await runDetached(cd, SHIM_RUNTIME, id2, COUNTER);
      const ck = await kybernate(['checkpoint', id2, '-n', ns, '--exit', '--json', '--agent', a2.socket]);
      expect(ck.code, ck.stdout + ck.stderr).toBe(0);
      const first = (JSON.parse(ck.stdout) as { snapshot: Snap }).snapshot;
      // Written into ram, then moved down by the policy (ram is over its 1 KiB).
      await waitFor('the policy to demote it', async () => (await ls2())[0]?.tiers.join() === 'disk');

      // Restore (promoted into ram, kept on disk), then a second checkpoint: retention deletes the first.
      expect((await kybernate(['restore', id2, '-n', ns, '--agent', a2.socket])).code).toBe(0);
      await waitStatus(cd, id2, 'RUNNING');
      expect((await kybernate(['checkpoint', id2, '-n', ns, '--exit', '--agent', a2.socket])).code).toBe(0);
      await waitFor('retention and demotion', async () => {
        const all = await ls2();
        return all.length === 1 && all[0]!.id !== first.id && all[0]!.tiers.join() === 'disk';
      });
      // Pinned in disk: still there after the policy ran again (a move kicks it).
      const only = (await ls2())[0]!;
      const pin = await kybernate(['snapshots', 'pin', only.id, '--tier', 'disk', '--json', '--agent', a2.socket]);
      expect(pin.code, pin.stdout + pin.stderr).toBe(0);
      expect(JSON.parse(pin.stdout).snapshot.pinned).toBe('disk');
      expect((await kybernate(['snapshots', 'mv', only.id, '--tier', 'disk', '--agent', a2.socket])).code).toBe(0);
      expect((await ls2()).map((x) => x.id)).toEqual([only.id]);
    } finally {
      await removeContainer(cd, id2);
      await a2.stop();
    }
  });
});
