// The agent's snapshot directory (src/agent/snapshots.ts): only complete snapshots are listed, newest
// and find/delete by id, path components validated, and what a killed checkpoint or agent left behind
// is cleaned on start without touching a checkpoint that is still being written.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { SnapshotDirectory } from '../../src/agent/snapshots';
import { SnapshotAttempt } from '../../src/snapshot/attempt';
import { INCOMPLETE_FILE, specDigest, writeManifest, type ContainerManifestInput } from '../../src/snapshot/manifest';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kyb-agent-snaps-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const bundle = fs.mkdtempSync(path.join(tmp, 'bundle-'));
fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify({ ociVersion: '1.0.2', process: { args: ['sleep', 'inf'] } }));

function input(ns: string, id: string, exit: boolean, gpuBytes = 0): ContainerManifestInput {
  return {
    container: { id, namespace: ns, bundle }, spec: { digest: specDigest(bundle) },
    versions: { criu: '4.1.1', runc: '1.1.5', kernel: os.release(), shim: '0.1.0', ...(gpuBytes ? { driver: '580.65.06' } : {}) },
    gpus: [], cuda: { pids: gpuBytes ? [77] : [], deviceMemoryBytes: gpuBytes }, options: { exit }, steps: [],
  };
}

/** A complete snapshot of ns/id written into a directory the index gave out; its id. */
async function complete(d: SnapshotDirectory, ns: string, id: string, opts: { exit?: boolean; gpuBytes?: number; bytes?: number } = {}): Promise<string> {
  const dir = await d.allocate(ns, id);
  const attempt = await SnapshotAttempt.begin(dir, { container: id, namespace: ns });
  fs.writeFileSync(path.join(dir, 'pages-1.img'), Buffer.alloc(opts.bytes ?? 4096, 7));
  await writeManifest(dir, input(ns, id, opts.exit ?? false, opts.gpuBytes ?? 0));
  await attempt.commit();
  return dir;
}

describe('SnapshotDirectory', () => {
  it('lists complete snapshots oldest first with their sizes, GPU memory and exit; newest and find agree', async () => {
    const d = new SnapshotDirectory(path.join(tmp, 'list'));
    expect(await d.list()).toEqual([]);
    const a = await complete(d, 'default', 'web', { bytes: 1000 });
    await new Promise((r) => setTimeout(r, 5));
    const b = await complete(d, 'default', 'web', { exit: true, gpuBytes: 300 << 20, bytes: 2000 });
    const c = await complete(d, 'k8s.io', 'job', {});
    const all = await d.list();
    expect(all.map((s) => s.path)).toEqual([a, b, c]);
    expect(all[1]).toMatchObject({ namespace: 'default', containerId: 'web', exited: true, gpuMemoryBytes: 300 << 20 });
    expect(all[1]!.sizeBytes).toBe(2000);
    expect(all[1]!.id).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect((await d.list('default')).map((s) => s.path)).toEqual([a, b]);
    expect((await d.list('default', 'web')).map((s) => s.path)).toEqual([a, b]);
    expect((await d.newest('default', 'web'))?.path).toBe(b);
    expect(await d.newest('default', 'other')).toBeUndefined();
    expect((await d.find(all[2]!.id)).path).toBe(c);
    expect((await d.find(all[2]!.id.slice(7, 19))).path).toBe(c);
    await expect(d.find('sha256:ffff', { namespace: 'default', id: 'web' })).rejects.toMatchObject({ code: 'KYB_ERR_NOT_FOUND' });
    await expect(d.find('xyz')).rejects.toMatchObject({ code: 'KYB_ERR_INVALID_ARGUMENT' });
  });

  it('never lists a directory marked incomplete, emptied, or whose files do not match its manifest', async () => {
    const d = new SnapshotDirectory(path.join(tmp, 'partial'));
    const good = await complete(d, 'default', 'web');
    const marked = await d.allocate('default', 'web');
    await SnapshotAttempt.begin(marked, { container: 'web', namespace: 'default' });
    fs.writeFileSync(path.join(marked, 'pages-1.img'), 'x');
    const empty = await d.allocate('default', 'web');
    const truncated = await complete(d, 'default', 'web');
    fs.truncateSync(path.join(truncated, 'pages-1.img'), 10);
    expect((await d.list()).map((s) => s.path)).toEqual([good]);
    expect(fs.existsSync(empty)).toBe(true);
  });

  it('deletes by id; the deleted snapshot is gone from the index and from the disk', async () => {
    const d = new SnapshotDirectory(path.join(tmp, 'delete'));
    const a = await complete(d, 'default', 'web');
    const b = await complete(d, 'default', 'web');
    const [sa] = await d.list();
    const removed = await d.delete(sa!.id);
    expect(removed.path).toBe(a);
    expect(fs.existsSync(a)).toBe(false);
    expect((await d.list()).map((s) => s.path)).toEqual([b]);
    await expect(d.delete(sa!.id)).rejects.toMatchObject({ code: 'KYB_ERR_NOT_FOUND' });
  });

  it('refuses namespaces and ids that are not containerd identifiers (they become path components)', async () => {
    const d = new SnapshotDirectory(path.join(tmp, 'ids'));
    await expect(d.allocate('..', 'web')).rejects.toMatchObject({ code: 'KYB_ERR_INVALID_ARGUMENT' });
    await expect(d.allocate('default', '../../etc')).rejects.toMatchObject({ code: 'KYB_ERR_INVALID_ARGUMENT' });
    await expect(d.list('a/b')).rejects.toMatchObject({ code: 'KYB_ERR_INVALID_ARGUMENT' });
    expect(fs.existsSync(path.join(tmp, 'ids'))).toBe(false);
  });

  it('removeOrphans clears a cut deletion and a dead writer\'s directory, keeps a live writer\'s and the complete ones', async () => {
    const d = new SnapshotDirectory(path.join(tmp, 'orphans'));
    const keep = await complete(d, 'default', 'web');
    // A deletion the agent was killed in the middle of.
    const cut = path.join(path.dirname(keep), '.deleting-1700000000000-deadbeef');
    fs.mkdirSync(cut);
    fs.writeFileSync(path.join(cut, 'pages-1.img'), 'x');
    // A checkpoint whose shim died: its marker names a pid that no longer exists.
    const dead = await d.allocate('default', 'web');
    const child = spawn('true');
    const deadPid = await new Promise<number>((r) => child.on('exit', () => r(child.pid!)));
    fs.writeFileSync(path.join(dead, INCOMPLETE_FILE), `${JSON.stringify({ container: 'web', namespace: 'default', shimPid: deadPid })}\n`);
    // A checkpoint still being written by a live shim (this process stands in for it).
    const live = await d.allocate('default', 'web');
    fs.writeFileSync(path.join(live, INCOMPLETE_FILE), `${JSON.stringify({ container: 'web', namespace: 'default', shimPid: process.pid })}\n`);
    const removed = await d.removeOrphans();
    expect(removed.sort()).toEqual([cut, dead].sort());
    expect(fs.existsSync(live)).toBe(true);
    expect((await d.list()).map((s) => s.path)).toEqual([keep]);
  });
});
