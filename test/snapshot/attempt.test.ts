// SnapshotAttempt's invariants against a real directory: the incomplete marker from begin() to commit(),
// restore's refusal of a marked directory, abort() removing only what the attempt wrote.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { INCOMPLETE_FILE, MANIFEST_FILE, readManifest } from '../../src/snapshot/manifest';
import { SnapshotAttempt } from '../../src/snapshot/attempt';
import { KybernateError } from '../../src/errors';

const roots: string[] = [];
afterEach(() => { for (const r of roots.splice(0)) rmSync(r, { recursive: true, force: true }); });
function root(): string {
  const r = mkdtempSync(join(tmpdir(), 'kyb-snapdir-'));
  roots.push(r);
  return r;
}
const who = { container: 'c1', namespace: 'ns' };

async function refusal(dir: string): Promise<KybernateError> {
  try {
    await readManifest(dir);
  } catch (err) {
    if (KybernateError.is(err)) return err;
    throw err;
  }
  throw new Error('readManifest accepted the directory');
}

describe('SnapshotAttempt', () => {
  it('marks a new directory incomplete until commit, and restore refuses it meanwhile even with a manifest', async () => {
    const dir = join(root(), 'ck');
    const a = await SnapshotAttempt.begin(dir, who);
    expect(readdirSync(dir)).toEqual([INCOMPLETE_FILE]);
    writeFileSync(join(dir, 'pages-1.img'), 'x');
    writeFileSync(join(dir, MANIFEST_FILE), '{}');
    const err = await refusal(dir);
    expect(err.code).toBe('KYB_ERR_CHECKPOINT_INVALID');
    expect(err.message).toMatch(/is incomplete.*container c1/);
    await a.commit();
    expect(existsSync(join(dir, INCOMPLETE_FILE))).toBe(false);
  });

  it('abort removes what the attempt wrote and the marker, in a directory that was empty', async () => {
    const dir = join(root(), 'ck');
    const a = await SnapshotAttempt.begin(dir, who);
    writeFileSync(join(dir, 'pages-1.img'), 'x');
    mkdirSync(join(dir, 'sub'));
    writeFileSync(join(dir, 'sub', 'f'), 'y');
    expect(await a.abort()).toBeUndefined();
    expect(readdirSync(dir)).toEqual([]);
  });

  it('abort keeps files that were there before, and the marker with them; the old manifest is gone from the start', async () => {
    const dir = root();
    writeFileSync(join(dir, 'pages-1.img'), 'old');
    writeFileSync(join(dir, MANIFEST_FILE), '{}');
    const a = await SnapshotAttempt.begin(dir, who);
    expect(existsSync(join(dir, MANIFEST_FILE))).toBe(false);
    writeFileSync(join(dir, 'pages-2.img'), 'new');
    await a.abort();
    expect(readdirSync(dir).sort()).toEqual([INCOMPLETE_FILE, 'pages-1.img']);
    expect((await refusal(dir)).message).toMatch(/incomplete/);
  });

  it('abort after commit keeps the complete snapshot', async () => {
    const dir = join(root(), 'ck');
    const a = await SnapshotAttempt.begin(dir, who);
    writeFileSync(join(dir, 'pages-1.img'), 'x');
    writeFileSync(join(dir, MANIFEST_FILE), '{}');
    await a.commit();
    expect(await a.abort()).toBeUndefined();
    expect(readdirSync(dir).sort()).toEqual([MANIFEST_FILE, 'pages-1.img']);
  });

  it('begin empties a directory an earlier attempt left marked', async () => {
    const dir = root();
    writeFileSync(join(dir, INCOMPLETE_FILE), 'not even JSON');
    writeFileSync(join(dir, 'pages-1.img'), 'partial');
    expect((await refusal(dir)).message).toMatch(/incomplete/);
    const a = await SnapshotAttempt.begin(dir, who);
    expect(readdirSync(dir)).toEqual([INCOMPLETE_FILE]);
    await a.abort();
    expect(readdirSync(dir)).toEqual([]);
  });

  it('begin fails with a clear error where the directory cannot be made', async () => {
    const file = join(root(), 'plain-file');
    writeFileSync(file, '');
    await expect(SnapshotAttempt.begin(join(file, 'ck'), who)).rejects.toMatchObject({ code: 'KYB_ERR_CHECKPOINT_FAILED' });
  });
});
