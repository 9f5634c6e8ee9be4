// The container checkpoint manifest: writing, reading, verification (integrity and compatibility) on real
// files, chunked hash lists of large files, the tar round trip through containerd's content store, and a
// timing log of hashing 1 GiB next to sha256sum.
import { afterAll, describe, expect, it } from 'vitest';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { performance } from 'node:perf_hooks';
import { Status, toStatus } from '../../src/errors';
import {
  CHUNK_BYTES, MANIFEST_FILE, hashListDigest, readManifest, specDigest, verifyManifest, writeManifest,
  type ContainerManifest, type ContainerManifestInput, type Expectations,
} from '../../src/snapshot/manifest';
import { nodeVersions } from '../../src/host/versions';
import { compareVersions, majorOf } from '../../src/host/versions';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const H100 = 'NVIDIA H100 80GB HBM3';
const A100 = 'NVIDIA A100-SXM4-40GB';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});
function tmp(prefix: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), `kyb-manifest-${prefix}-`));
  dirs.push(d);
  return d;
}

const bundle = tmp('bundle');
fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify({ ociVersion: '1.0.2', process: { args: ['sleep', 'inf'] } }));

function input(over: Partial<ContainerManifestInput> = {}): ContainerManifestInput {
  return {
    container: { id: 'ctr-1', namespace: 'k8s.io', image: 'docker.io/library/busybox:latest', bundle },
    spec: { digest: specDigest(bundle) },
    versions: { criu: '4.1.1', runc: '1.1.5', kernel: '6.1.0-18-amd64', shim: '0.1.0', driver: '580.159.04' },
    gpus: [{ uuid: 'GPU-11111111-aaaa', name: H100, memoryBytes: 80 * 1024 * MiB }],
    cuda: { pids: [4242], deviceMemoryBytes: 4096 * MiB },
    options: { exit: false, openTcp: true, fileLocks: false },
    steps: [{ step: 'cuda-checkpoint', ms: 812.5, bytes: 4096 * MiB }, { step: 'criu-dump', ms: 2100 }],
    ...over,
  };
}
const here: Expectations = {
  criuVersion: '4.1.1',
  driverVersion: '580.159.04',
  gpus: [{ uuid: 'GPU-11111111-aaaa', name: H100, memoryBytes: 80 * 1024 * MiB }],
};

/** A small checkpoint-like tree: images at the top, GPU metadata nested two levels down. */
function smallCheckpoint(): string {
  const d = tmp('small');
  fs.writeFileSync(path.join(d, 'inventory.img'), crypto.randomBytes(300));
  fs.writeFileSync(path.join(d, 'pages-1.img'), crypto.randomBytes(256 * 1024));
  fs.writeFileSync(path.join(d, 'empty.img'), '');
  fs.mkdirSync(path.join(d, 'gpu', 'per-pid'), { recursive: true });
  fs.writeFileSync(path.join(d, 'gpu', 'meta.json'), '{"devices":1}');
  fs.writeFileSync(path.join(d, 'gpu', 'per-pid', '4242.bin'), crypto.randomBytes(5000));
  return d;
}

/** `size` bytes in which every MiB differs (a random block stamped with its index). */
function writeBig(file: string, size: number): void {
  const block = crypto.randomBytes(MiB);
  const fd = fs.openSync(file, 'w');
  try {
    for (let off = 0; off < size; off += MiB) {
      block.writeUInt32LE(off / MiB, 0);
      fs.writeSync(fd, block, 0, Math.min(MiB, size - off), off);
    }
  } finally {
    fs.closeSync(fd);
  }
}

async function rejection(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (err) {
    return err as { code: string; message: string };
  }
  throw new Error('expected a rejection');
}

describe('write and read', () => {
  it('round-trips a nested directory; the manifest lists every file but itself, with plain sha256', async () => {
    const d = smallCheckpoint();
    const written = await writeManifest(d, input());
    expect(fs.readdirSync(d)).not.toContain(`.${MANIFEST_FILE}.tmp`);
    const read = await readManifest(d);
    expect(read).toEqual(written);
    expect(read).toMatchObject({ version: 1, kind: 'container', container: { id: 'ctr-1', namespace: 'k8s.io' } });
    expect(Date.parse(read.createdAt)).not.toBeNaN();
    expect(read.files.map((f) => f.name)).toEqual(
      ['empty.img', 'gpu/meta.json', 'gpu/per-pid/4242.bin', 'inventory.img', 'pages-1.img']);
    for (const f of read.files) {
      const bytes = fs.readFileSync(path.join(d, f.name));
      expect(f.size).toBe(bytes.length);
      expect(f.sha256).toBe(crypto.createHash('sha256').update(bytes).digest('hex'));
      expect(f.chunks).toBeUndefined();
    }
    expect((read as ContainerManifest).spec.digest).toBe(`sha256:${crypto.createHash('sha256').update(fs.readFileSync(path.join(bundle, 'config.json'))).digest('hex')}`);
    await expect(verifyManifest(d, here)).resolves.toEqual(written);
  });

  it('writing again replaces the manifest and never lists it', async () => {
    const d = smallCheckpoint();
    await writeManifest(d, input());
    const again = await writeManifest(d, input({ options: { exit: true } }));
    expect(again.files.some((f) => f.name === MANIFEST_FILE)).toBe(false);
    expect((await readManifest(d)).options).toEqual({ exit: true });
  });

  it('refuses a directory holding a symlink, and an input that is not a valid manifest', async () => {
    const d = smallCheckpoint();
    fs.symlinkSync('inventory.img', path.join(d, 'gpu', 'link.img'));
    const err = await rejection(writeManifest(d, input()));
    expect(err.code).toBe('KYB_ERR_CHECKPOINT_FAILED');
    expect(err.message).toMatch(/gpu\/link\.img is a symlink/);
    expect(fs.existsSync(path.join(d, MANIFEST_FILE))).toBe(false);

    const bad = await rejection(writeManifest(smallCheckpoint(), input({ versions: { criu: '4.1.1', runc: '1.1.5', kernel: 'k', shim: 's' } })));
    expect(bad.code).toBe('KYB_ERR_INVALID_ARGUMENT');
    expect(bad.message).toMatch(/versions\.driver is required/);
  });
});

describe('large files: hash lists of 64 MiB chunks', () => {
  const d = tmp('large');
  const size = 2 * CHUNK_BYTES + 22 * MiB; // chunks 0 and 1 full, chunk 2 is 22 MiB
  const big = 'pages-2.img';

  it('a file over 64 MiB gets chunk digests, a hash list reproducible by a plain computation, and verifies', async () => {
    writeBig(path.join(d, big), size);
    fs.writeFileSync(path.join(d, 'exactly-one-chunk.bin'), Buffer.alloc(CHUNK_BYTES, 7));
    fs.writeFileSync(path.join(d, 'core-1.img'), crypto.randomBytes(4096));
    const m = await writeManifest(d, input());

    const one = m.files.find((f) => f.name === 'exactly-one-chunk.bin')!;
    expect(one.chunks).toBeUndefined();
    expect(one.sha256).toBe(crypto.createHash('sha256').update(Buffer.alloc(CHUNK_BYTES, 7)).digest('hex'));

    const f = m.files.find((x) => x.name === big)!;
    expect(f.size).toBe(size);
    const bytes = fs.readFileSync(path.join(d, big));
    const plainChunks = [0, 1, 2].map((i) =>
      crypto.createHash('sha256').update(bytes.subarray(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES)).digest());
    expect(f.chunks).toEqual(plainChunks.map((c) => c.toString('hex')));
    expect(f.sha256).toBe(crypto.createHash('sha256').update(Buffer.concat(plainChunks)).digest('hex'));
    expect(hashListDigest(f.chunks!)).toBe(f.sha256);

    await expect(verifyManifest(d, here)).resolves.toMatchObject({ files: m.files });
  });

  it('one flipped byte in the middle of chunk 2 is named by file and chunk', async () => {
    const file = path.join(d, big);
    const at = 2 * CHUNK_BYTES + 11 * MiB;
    const fd = fs.openSync(file, 'r+');
    const orig = Buffer.alloc(1);
    try {
      fs.readSync(fd, orig, 0, 1, at);
      fs.writeSync(fd, Buffer.from([orig[0] ^ 0xff]), 0, 1, at);
      const err = await rejection(verifyManifest(d, here));
      expect(err.code).toBe('KYB_ERR_CHECKPOINT_INVALID');
      expect(err.message).toMatch(/pages-2\.img is corrupt: chunk 2 \(of 0\.\.2, bytes 134217728-157286399\)/);
    } finally {
      fs.writeSync(fd, orig, 0, 1, at);
      fs.closeSync(fd);
    }
    await verifyManifest(d, here);
  });

  it('a manifest whose hash list does not match its chunks is invalid', async () => {
    const m = JSON.parse(fs.readFileSync(path.join(d, MANIFEST_FILE), 'utf8'));
    const e = tmp('badlist');
    m.files = m.files.filter((f: { name: string }) => f.name === big);
    m.files[0].chunks[0] = m.files[0].chunks[1];
    fs.writeFileSync(path.join(e, MANIFEST_FILE), JSON.stringify(m));
    const err = await rejection(readManifest(e));
    expect(err.code).toBe('KYB_ERR_CHECKPOINT_INVALID');
    expect(err.message).toMatch(/pages-2\.img: sha256 does not match its chunk digests/);
  });

  it('survives the tar round trip through the content store (tar -C dir -cf, extract elsewhere)', async () => {
    fs.mkdirSync(path.join(d, 'gpu'));
    fs.writeFileSync(path.join(d, 'gpu', 'meta.json'), '{}');
    await writeManifest(d, input());
    const archive = path.join(tmp('tar'), 'checkpoint.tar');
    await run('tar', ['-C', d, '-cf', archive, '.']);
    const out = tmp('untar');
    await run('tar', ['-C', out, '-xf', archive]);
    // Extraction gives new mtimes (and, as root, keeps owners only by chance): content is what counts.
    fs.utimesSync(path.join(out, big), new Date(0), new Date(0));
    const m = await verifyManifest(out, here);
    expect(m.files.map((f) => f.name)).toContain('gpu/meta.json');
  });
});

describe('integrity: refused as KYB_ERR_CHECKPOINT_INVALID (DATA_LOSS)', () => {
  async function invalid(dir: string, pattern: RegExp): Promise<void> {
    const err = await rejection(verifyManifest(dir, here));
    expect(err.code).toBe('KYB_ERR_CHECKPOINT_INVALID');
    expect(toStatus(err).code).toBe(Status.DATA_LOSS);
    expect(err.message).toMatch(pattern);
  }

  it('a missing directory, and a file in place of one', async () => {
    await invalid(path.join(os.tmpdir(), 'kyb-manifest-no-such-dir'), /not found/);
    const f = path.join(tmp('notdir'), 'file');
    fs.writeFileSync(f, 'x');
    await invalid(f, /not a directory/);
  });

  it('no manifest', async () => {
    await invalid(smallCheckpoint(), /has no kybernate-manifest\.json: the checkpoint is incomplete or was not made by kybernate/);
  });

  it('a truncated manifest (invalid JSON), and one that parses but is not a manifest', async () => {
    const d = smallCheckpoint();
    await writeManifest(d, input());
    const file = path.join(d, MANIFEST_FILE);
    const text = fs.readFileSync(file, 'utf8');
    fs.writeFileSync(file, text.slice(0, text.length / 2));
    await invalid(d, /kybernate-manifest\.json is not valid JSON/);
    fs.writeFileSync(file, JSON.stringify({ ...JSON.parse(text), version: 2 }));
    await invalid(d, /invalid kybernate-manifest\.json: version 2/);
    const hostile = JSON.parse(text);
    hostile.files[0].name = '../../etc/passwd';
    fs.writeFileSync(file, JSON.stringify(hostile));
    await invalid(d, /bad name "\.\.\/\.\.\/etc\/passwd"/);
  });

  it('a listed file missing', async () => {
    const d = smallCheckpoint();
    await writeManifest(d, input());
    fs.rmSync(path.join(d, 'gpu', 'per-pid', '4242.bin'));
    await invalid(d, /gpu\/per-pid\/4242\.bin is listed in the manifest but missing/);
  });

  it('a file truncated by one byte names the file and both sizes', async () => {
    const d = smallCheckpoint();
    await writeManifest(d, input());
    fs.truncateSync(path.join(d, 'pages-1.img'), 256 * 1024 - 1);
    await invalid(d, /pages-1\.img is truncated: the manifest says 262144 bytes, the file has 262143/);
  });

  it('a changed byte in a small file', async () => {
    const d = smallCheckpoint();
    await writeManifest(d, input());
    const f = path.join(d, 'inventory.img');
    const b = fs.readFileSync(f);
    b[150] ^= 1;
    fs.writeFileSync(f, b);
    await invalid(d, /inventory\.img is corrupt: its sha256 is [0-9a-f]{64}, the manifest says/);
  });

  it('an extra file that is not an image is ignored; an unlisted image file is refused', async () => {
    const d = smallCheckpoint();
    await writeManifest(d, input());
    fs.writeFileSync(path.join(d, 'restore.log'), 'written later by CRIU');
    fs.writeFileSync(path.join(d, `.${MANIFEST_FILE}.tmp`), '{"left by a crash');
    await verifyManifest(d, here);
    fs.writeFileSync(path.join(d, 'gpu', 'pages-9.img'), 'late');
    await invalid(d, /image file gpu\/pages-9\.img is not in the manifest/);
  });
});

describe('compatibility: refused as KYB_ERR_CHECKPOINT_INCOMPATIBLE (FAILED_PRECONDITION)', () => {
  const d = smallCheckpoint();
  const written = writeManifest(d, input());

  async function incompatible(expect_: Expectations, pattern: RegExp, dir = d): Promise<void> {
    await written;
    const err = await rejection(verifyManifest(dir, expect_));
    expect(err.code).toBe('KYB_ERR_CHECKPOINT_INCOMPATIBLE');
    expect(toStatus(err).code).toBe(Status.FAILED_PRECONDITION);
    expect(err.message).toMatch(pattern);
  }

  it('an older CRIU is refused, the same or a newer one accepted (numeric, not lexical)', async () => {
    await incompatible({ ...here, criuVersion: '4.0.9' }, /dumped by CRIU 4\.1\.1; this node has CRIU 4\.0\.9/);
    await incompatible({ ...here, criuVersion: '3.19' }, /CRIU 4\.1\.1.*CRIU 3\.19/);
    for (const v of ['4.1.1', '4.1.10', '4.2', '10.0.0']) await verifyManifest(d, { ...here, criuVersion: v });
  });

  it('a different driver major is refused; another minor of the same branch accepted', async () => {
    await incompatible({ ...here, driverVersion: '575.57.08' }, /CUDA driver 580\.159\.04; this node has 575\.57\.08/);
    await verifyManifest(d, { ...here, driverVersion: '580.65.06' });
  });

  it('no driver here is refused when the checkpoint holds CUDA processes, accepted when it holds none', async () => {
    await incompatible({ ...here, driverVersion: undefined }, /holds CUDA processes \(pids 4242; driver 580\.159\.04\), but this node has no CUDA driver/);
    const noCuda = smallCheckpoint();
    await writeManifest(noCuda, input({ cuda: { pids: [], deviceMemoryBytes: 0 }, gpus: [] }));
    await verifyManifest(noCuda, { criuVersion: '4.1.1' });
  });

  it('a different GPU model is refused; other UUIDs of the same model accepted', async () => {
    await incompatible({ ...here, gpus: [{ uuid: 'GPU-2', name: A100, memoryBytes: 40 * 1024 * MiB }] },
      /needs GPUs 1x 'NVIDIA H100 80GB HBM3'; this node has 1x 'NVIDIA A100-SXM4-40GB'/);
    await incompatible({ ...here, gpus: undefined }, /this node has none/);
    await verifyManifest(d, { ...here, gpus: [{ uuid: 'GPU-99999999-zzzz', name: H100, memoryBytes: 80 * 1024 * MiB }] });
  });

  it('GPU models are compared as multisets: at least as many of each model', async () => {
    const two = smallCheckpoint();
    const gpu = (uuid: string, name: string) => ({ uuid, name, memoryBytes: 1 });
    await writeManifest(two, input({ gpus: [gpu('a', H100), gpu('b', H100), gpu('c', A100)] }));
    await incompatible({ ...here, gpus: [gpu('x', H100), gpu('y', A100), gpu('z', A100)] },
      /needs GPUs 2x 'NVIDIA H100 80GB HBM3', 1x 'NVIDIA A100-SXM4-40GB'; this node has 1x/, two);
    await verifyManifest(two, { ...here, gpus: [gpu('p', A100), gpu('q', H100), gpu('r', H100), gpu('s', H100)] });
  });
});

describe('versions', () => {
  it('compares major.minor.patch numerically and takes the driver major before the first dot', () => {
    expect(compareVersions('4.1.10', '4.1.9')).toBeGreaterThan(0);
    expect(compareVersions('4.1', '4.1.0')).toBe(0);
    expect(compareVersions('Version: 3.19', '4.0')).toBeLessThan(0);
    expect(compareVersions('unknown', '4.0')).toBeUndefined();
    expect(majorOf('580.159.04')).toBe('580');
    expect(majorOf('12080')).toBe('12080');
  });

  it('nodeVersions parses criu and runc output through an injected runner; a missing binary gives undefined', async () => {
    const outputs: Record<string, string> = {
      criu: 'Version: 4.1.1\nGitID: v4.1.1\n',
      runc: 'runc version 1.1.5\ncommit: v1.1.5-0\nspec: 1.0.2-dev\n',
    };
    const calls: string[][] = [];
    const v = await nodeVersions(async (file, args) => {
      calls.push([file, ...args]);
      return outputs[file];
    });
    expect(v).toEqual({ kernel: os.release(), criu: '4.1.1', runc: '1.1.5' });
    expect(calls.sort()).toEqual([['criu', '--version'], ['runc', '--version']]);

    const none = await nodeVersions(async (file) => {
      throw Object.assign(new Error(`spawn ${file} ENOENT`), { code: 'ENOENT' });
    });
    expect(none).toEqual({ kernel: os.release(), criu: undefined, runc: undefined });
  });

  it('nodeVersions with the default runner reads this machine\'s criu and runc', async () => {
    const v = await nodeVersions();
    expect(v.kernel).toBe(os.release());
    const has = async (bin: string) => run(bin, ['--version']).then(() => true, () => false);
    if (await has('criu')) expect(v.criu).toMatch(/^\d+\.\d+/);
    else expect(v.criu).toBeUndefined();
    if (await has('runc')) expect(v.runc).toMatch(/^\d+\.\d+/);
    else expect(v.runc).toBeUndefined();
  });
});

describe('bundled into one CommonJS file, as the shim is', () => {
  it('hashes with inline workers and lets the process exit on its own (no lingering threads)', async () => {
    const { build } = await import('esbuild');
    const out = tmp('bundle-cjs');
    const cjs = path.join(out, 'manifest.cjs');
    await build({
      entryPoints: [fileURLToPath(new URL('../../src/snapshot/manifest.ts', import.meta.url))],
      bundle: true, platform: 'node', format: 'cjs', target: 'node20', outfile: cjs, logLevel: 'silent',
    });
    const d = smallCheckpoint();
    writeBig(path.join(d, 'pages-3.img'), CHUNK_BYTES + MiB);
    const script = `
      const m = require(process.argv[1]);
      (async () => {
        const input = JSON.parse(process.argv[3]);
        const w = await m.writeManifest(process.argv[2], input);
        const v = await m.verifyManifest(process.argv[2], JSON.parse(process.argv[4]));
        console.log(JSON.stringify({ files: w.files.length, same: JSON.stringify(w) === JSON.stringify(v) }));
      })().catch((e) => { console.error(e); process.exit(1); });`;
    // A worker left running would keep this process alive until the timeout kills it.
    const { stdout } = await run(process.execPath, ['-e', script, cjs, d, JSON.stringify(input()), JSON.stringify(here)], { timeout: 30_000 });
    expect(JSON.parse(stdout)).toEqual({ files: 6, same: true });
  });
});

describe('performance (logged, not asserted)', () => {
  it('hashes and verifies 1 GiB, next to sha256sum of the same file', async () => {
    const d = tmp('perf');
    const file = path.join(d, 'pages-1.img');
    writeBig(file, 1024 * MiB);
    const t0 = performance.now();
    const m = await writeManifest(d, input());
    const t1 = performance.now();
    await verifyManifest(d, here);
    const t2 = performance.now();
    const { stdout } = await run('sha256sum', [file]);
    const t3 = performance.now();
    const single = crypto.createHash('sha256');
    for await (const b of fs.createReadStream(file, { highWaterMark: MiB })) single.update(b as Buffer);
    expect(single.digest('hex')).toBe(stdout.split(' ')[0]);
    const t4 = performance.now();
    expect(stdout.split(' ')[0]).toMatch(/^[0-9a-f]{64}$/);
    expect(m.files[0].chunks).toHaveLength(16);
    const rate = (ms: number) => `${(1024 / (ms / 1000)).toFixed(0)} MiB/s`;
    console.log(`[manifest perf] 1 GiB, page cache warm, ${os.availableParallelism()} CPUs: ` +
      `writeManifest ${(t1 - t0).toFixed(0)} ms (${rate(t1 - t0)}), verifyManifest ${(t2 - t1).toFixed(0)} ms (${rate(t2 - t1)}), ` +
      `sha256sum ${(t3 - t2).toFixed(0)} ms (${rate(t3 - t2)}), one-thread node stream ${(t4 - t3).toFixed(0)} ms (${rate(t4 - t3)})`);
  });
});
