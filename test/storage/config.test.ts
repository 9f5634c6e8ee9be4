// The "storage" section of the agent's config (src/storage/config.ts): invariants C1–C6 of its header,
// good and bad values, the credentials' three sources, and the policy view toPolicy() gives.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  parseDuration, parseSize, parseStorageConfig, readSecretFile, toPolicy, StorageConfigError,
  type SecretFile, type StorageConfigOptions,
} from '../../src/storage/config';

const GiB = 2 ** 30;
const secrets: Record<string, SecretFile> = { '/etc/kybernate/s3.key': { text: 'sekrit-123\n', mode: 0o600 }, '/etc/kybernate/open.key': { text: 'sekrit-123', mode: 0o644 } };
const opts = (over: Partial<StorageConfigOptions> = {}): StorageConfigOptions => ({
  ramCapacityBytes: 4 * GiB, env: {},
  readSecretFile: (f) => {
    if (!secrets[f]) throw new Error(`ENOENT: no such file or directory, open '${f}'`);
    return secrets[f];
  },
  ...over,
});
const s3 = (over: Record<string, unknown> = {}): Record<string, unknown> =>
  ({ endpoint: 'https://s3.example:443', bucket: 'snapshots', accessKeyId: 'AKID', secretAccessKeyFile: '/etc/kybernate/s3.key', ...over });

/** The message of the StorageConfigError `raw` gives. */
function refusal(raw: unknown, o = opts()): string {
  try {
    parseStorageConfig(raw, o);
  } catch (err) {
    expect(err).toBeInstanceOf(StorageConfigError);
    expect((err as Error).name).toBe('StorageConfigError');
    return (err as Error).message;
  }
  throw new Error(`accepted: ${JSON.stringify(raw)}`);
}

describe('parseStorageConfig', () => {
  it('reads the full example of the issue', () => {
    const cfg = parseStorageConfig({
      ram: { dir: '/dev/shm/kybernate', capacity: '8GiB', demoteAfter: '10m' },
      disk: { dir: '/var/lib/kybernate/chunks/', capacity: '200GiB', demoteAfter: '24h' },
      s3: s3({ region: 'us-east-1', prefix: 'node-a/', capacity: 'unlimited', concurrency: 16 }),
      keepPerWorkload: 3,
      '// note': 'comments are keys starting with //',
    }, opts());
    expect(cfg).toEqual({
      ram: { dir: '/dev/shm/kybernate', capacityBytes: 8 * GiB, demoteAfterMs: 600_000 },
      disk: { dir: '/var/lib/kybernate/chunks', capacityBytes: 200 * GiB, demoteAfterMs: 86_400_000 },
      s3: {
        endpoint: 'https://s3.example', region: 'us-east-1', bucket: 'snapshots', prefix: 'node-a/', forcePathStyle: true,
        concurrency: 16, capacityBytes: Infinity, credentials: { accessKeyId: 'AKID', secretAccessKey: 'sekrit-123', from: 'file' },
      },
      keepPerWorkload: 3,
      warnings: [],
    });
    expect(toPolicy(cfg)).toEqual({
      tiers: [
        { name: 'ram', capacityBytes: 8 * GiB, demoteAfterMs: 600_000 },
        { name: 'disk', capacityBytes: 200 * GiB, demoteAfterMs: 86_400_000 },
        { name: 's3', capacityBytes: Infinity },
      ],
      keepPerWorkload: 3,
    });
  });

  it('has the RAM tier alone by default, its capacity the number the caller measured (C1)', () => {
    for (const raw of [undefined, null, {}]) {
      expect(parseStorageConfig(raw, opts({ ramCapacityBytes: 1234.5 }))).toEqual({
        ram: { dir: '/dev/shm/kybernate', capacityBytes: 1234, demoteAfterMs: undefined }, keepPerWorkload: 3, warnings: [],
      });
    }
    expect(toPolicy(parseStorageConfig({ keepPerWorkload: 0 }, opts()))).toEqual({ tiers: [{ name: 'ram', capacityBytes: 4 * GiB }], keepPerWorkload: 0 });
    expect(refusal({}, opts({ ramCapacityBytes: 0 }))).toMatch(/^storage\.ram\.capacity: give a size/);
    expect(parseStorageConfig({ ram: { capacity: '1GB' } }, opts({ ramCapacityBytes: NaN })).ram.capacityBytes).toBe(1e9);
    const s3Only = toPolicy(parseStorageConfig({ s3: s3({ endpoint: undefined }) }, opts()));
    expect(s3Only.tiers.map((t) => t.name)).toEqual(['ram', 's3']);
  });

  it('refuses unknown keys and wrong types, naming the key (C2)', () => {
    expect(refusal([])).toBe('storage must be an object');
    expect(refusal({ tiers: {} })).toBe('storage: unknown key "tiers" (the keys are ram, disk, s3, keepPerWorkload)');
    expect(refusal({ ram: { capcity: '1GiB' } })).toMatch(/^storage\.ram: unknown key "capcity"/);
    expect(refusal({ s3: s3({ demoteAfter: '1h' }) })).toMatch(/^storage\.s3: unknown key "demoteAfter"/);
    expect(refusal({ disk: { dir: '/d', capacity: '1GiB', extra: 1 } })).toMatch(/^storage\.disk: unknown key "extra"/);
    expect(refusal({ disk: 'fast' })).toBe('storage.disk must be an object');
    expect(refusal({ disk: { capacity: '1GiB' } })).toMatch(/^storage\.disk\.dir is required/);
    expect(refusal({ disk: { dir: '/d' } })).toMatch(/^storage\.disk\.capacity is required/);
    expect(refusal({ keepPerWorkload: -1 })).toMatch(/^storage\.keepPerWorkload must be a whole number >= 0/);
    expect(refusal({ keepPerWorkload: '3' })).toMatch(/^storage\.keepPerWorkload/);
    expect(refusal({ s3: s3({ concurrency: 0 }) })).toMatch(/^storage\.s3\.concurrency must be a whole number from 1 to 256/);
    expect(refusal({ s3: s3({ forcePathStyle: 'yes' }) })).toBe('storage.s3.forcePathStyle must be true or false');
  });

  it('reads sizes and durations (C3)', () => {
    const cases: Array<[unknown, number]> = [
      ['512MiB', 512 * 2 ** 20], ['8GiB', 8 * GiB], ['1TB', 1e12], ['1.5KiB', 1536], ['100B', 100], ['2TiB', 2 * 2 ** 40],
      [4096, 4096], ['unlimited', Infinity],
    ];
    for (const [v, n] of cases) expect(parseSize(v, 'x')).toBe(n);
    for (const v of ['0GiB', 0, -1, 1.5, '8 GiB', '8gib', '8G', 'lots', '', null, true, '0.1B']) {
      expect(() => parseSize(v, 'storage.ram.capacity'), JSON.stringify(v)).toThrow(/^storage\.ram\.capacity must be a size like 512MiB/);
    }
    const durations: Array<[unknown, number | undefined]> = [['30s', 30_000], ['10m', 600_000], ['24h', 86_400_000], ['1.5h', 5_400_000], ['250ms', 250], ['7d', 604_800_000], ['0s', 0], ['never', undefined]];
    for (const [v, n] of durations) expect(parseDuration(v, 'x')).toBe(n);
    for (const v of ['10', 600, '10 m', '1w', '-5s', 'soon']) {
      expect(() => parseDuration(v, 'storage.disk.demoteAfter'), JSON.stringify(v)).toThrow(/^storage\.disk\.demoteAfter must be a duration like 30s/);
    }
    expect(refusal({ ram: { capacity: '8 GiB' } })).toMatch(/^storage\.ram\.capacity must be a size/);
  });

  it('wants absolute, separate directories (C4)', () => {
    expect(refusal({ ram: { dir: 'shm/kybernate' } })).toBe('storage.ram.dir must be an absolute path, not "shm/kybernate"');
    expect(refusal({ disk: { dir: './chunks', capacity: '1GiB' } })).toMatch(/^storage\.disk\.dir must be an absolute path/);
    expect(refusal({ disk: { dir: '//', capacity: '1GiB' } })).toBe('storage.disk.dir must not be / itself');
    expect(refusal({ disk: { dir: '/dev/shm/kybernate/disk', capacity: '1GiB' } })).toMatch(/^storage\.disk\.dir .* must be apart/);
    expect(refusal({ ram: { dir: '/data/x/ram' }, disk: { dir: '/data/x/', capacity: '1GiB' } })).toMatch(/^storage\.disk\.dir \/data\/x and storage\.ram\.dir/);
    const cfg = parseStorageConfig({ ram: { dir: '/data/ram//' }, disk: { dir: '/data/ram2', capacity: '1GiB' } }, opts());
    expect([cfg.ram.dir, cfg.disk!.dir]).toEqual(['/data/ram', '/data/ram2']);
  });

  it('checks the S3 endpoint, bucket, region and prefix (C4)', () => {
    expect(refusal({ s3: s3({ endpoint: 's3.example:443' }) })).toMatch(/^storage\.s3\.endpoint must be/);
    expect(refusal({ s3: s3({ endpoint: 'ftp://s3.example' }) })).toBe('storage.s3.endpoint must be http:// or https://, not ftp:');
    expect(refusal({ s3: s3({ endpoint: 'https://u:p@s3.example' }) })).toMatch(/^storage\.s3\.endpoint must not hold credentials/);
    expect(refusal({ s3: s3({ endpoint: 'https://s3.example/?x=1' }) })).toMatch(/^storage\.s3\.endpoint must have no query/);
    expect(refusal({ s3: s3({ bucket: undefined }) })).toBe('storage.s3.bucket is required');
    expect(refusal({ s3: s3({ bucket: 'Snap_shots' }) })).toMatch(/^storage\.s3\.bucket "Snap_shots" is not a bucket name/);
    expect(refusal({ s3: s3({ region: 'us east' }) })).toMatch(/^storage\.s3\.region/);
    for (const prefix of ['/abs/', 'a//b/', '../up/', 'a/./b']) expect(refusal({ s3: s3({ prefix }) })).toMatch(/^storage\.s3\.prefix/);
    expect(refusal({ s3: s3({ prefix: 7 }) })).toBe('storage.s3.prefix must be a string');

    const local = parseStorageConfig({ s3: s3({ endpoint: 'http://127.0.0.1:7480', prefix: 'node-a/x' }) }, opts());
    expect(local.s3).toMatchObject({ endpoint: 'http://127.0.0.1:7480', prefix: 'node-a/x/', region: 'us-east-1', concurrency: 8, forcePathStyle: true });
    expect(local.warnings).toEqual([]);
    const aws = parseStorageConfig({ s3: s3({ endpoint: undefined, region: 'eu-west-1', prefix: '' }) }, opts());
    expect(aws.s3).toMatchObject({ endpoint: undefined, prefix: '', forcePathStyle: false, region: 'eu-west-1' });
    expect(parseStorageConfig({ s3: s3({ endpoint: 'http://[::1]:9000' }) }, opts()).warnings).toEqual([]);
    expect(parseStorageConfig({ s3: s3({ endpoint: 'http://rgw.lan:7480', forcePathStyle: false }) }, opts())).toMatchObject({
      s3: { forcePathStyle: false }, warnings: ['storage.s3.endpoint http://rgw.lan:7480 is plain http: snapshot bytes travel unencrypted'],
    });
  });

  it('takes credentials from the config, a file or the environment, never naming the secret (C5)', () => {
    const creds = (s: Record<string, unknown>, env: Record<string, string> = {}) => parseStorageConfig({ s3: s }, opts({ env })).s3!.credentials;
    expect(creds(s3({ secretAccessKeyFile: undefined, secretAccessKey: 'inline' }))).toEqual({ accessKeyId: 'AKID', secretAccessKey: 'inline', from: 'config' });
    expect(creds(s3())).toEqual({ accessKeyId: 'AKID', secretAccessKey: 'sekrit-123', from: 'file' });
    const env = { AWS_ACCESS_KEY_ID: 'ENVID', AWS_SECRET_ACCESS_KEY: 'envsecret' };
    expect(creds(s3({ accessKeyId: undefined, secretAccessKeyFile: undefined }), env)).toEqual({ accessKeyId: 'ENVID', secretAccessKey: 'envsecret', from: 'env' });
    expect(creds(s3(), env), 'the config wins over the environment').toEqual({ accessKeyId: 'AKID', secretAccessKey: 'sekrit-123', from: 'file' });

    expect(refusal({ s3: s3({ secretAccessKey: 'inline' }) })).toBe('storage.s3.secretAccessKey and storage.s3.secretAccessKeyFile: give one of them, not both');
    expect(refusal({ s3: s3({ secretAccessKeyFile: undefined }) })).toMatch(/^storage\.s3\.secretAccessKey: no S3 credentials; .* or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY$/);
    expect(refusal({ s3: s3({ accessKeyId: undefined }) })).toMatch(/^storage\.s3\.accessKeyId: no S3 credentials/);
    expect(refusal({ s3: s3({ secretAccessKeyFile: 'keys/s3' }) })).toMatch(/^storage\.s3\.secretAccessKeyFile must be an absolute path/);
    expect(refusal({ s3: s3({ secretAccessKeyFile: '/nope' }) })).toBe("storage.s3.secretAccessKeyFile /nope: ENOENT: no such file or directory, open '/nope'");
    secrets['/etc/kybernate/two.key'] = { text: 'AKID sekrit-123\n', mode: 0o600 };
    const twoWords = refusal({ s3: s3({ secretAccessKeyFile: '/etc/kybernate/two.key' }) });
    expect(twoWords).toBe('storage.s3.secretAccessKeyFile /etc/kybernate/two.key must hold the secret alone, on one line');
    expect(refusal({ s3: s3({ accessKeyId: 7 }) })).toBe('storage.s3.accessKeyId must be a non-empty string');
    for (const m of [twoWords, refusal({ s3: s3({ secretAccessKey: 'inline', secretAccessKeyFile: undefined, accessKeyId: undefined }) })]) {
      expect(m).not.toMatch(/sekrit|inline/);
    }
  });

  it('warns about a secret file others can read, and a demoteAfter with no tier below (C2, C5)', () => {
    const open = parseStorageConfig({ s3: s3({ secretAccessKeyFile: '/etc/kybernate/open.key' }) }, opts());
    expect(open.s3!.credentials.secretAccessKey).toBe('sekrit-123');
    expect(open.warnings).toEqual(['storage.s3.secretAccessKeyFile /etc/kybernate/open.key is readable by others than its owner (mode 0644); chmod 600 it']);
    expect(parseStorageConfig({ ram: { demoteAfter: '10m' } }, opts()).warnings).toEqual(['storage.ram.demoteAfter has no effect: no tier is configured below ram']);
    expect(parseStorageConfig({ disk: { dir: '/d', capacity: '1GiB', demoteAfter: '1h' } }, opts()).warnings).toEqual(['storage.disk.demoteAfter has no effect: no tier is configured below disk']);
    expect(parseStorageConfig({ ram: { demoteAfter: '10m' }, disk: { dir: '/d', capacity: '1GiB' } }, opts()).warnings).toEqual([]);
  });
});

describe('readSecretFile (C6)', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kyb-storage-config-'));
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('gives the text and permission bits of a real file, and the parser uses it by default', () => {
    const file = path.join(tmp, 's3.key');
    fs.writeFileSync(file, 'real-secret\n', { mode: 0o640 });
    fs.chmodSync(file, 0o640);
    expect(readSecretFile(file)).toEqual({ text: 'real-secret\n', mode: 0o640 });
    const cfg = parseStorageConfig({ s3: s3({ secretAccessKeyFile: file }) }, { ramCapacityBytes: GiB, env: {} });
    expect(cfg.s3!.credentials.secretAccessKey).toBe('real-secret');
    expect(cfg.warnings).toEqual([`storage.s3.secretAccessKeyFile ${file} is readable by others than its owner (mode 0640); chmod 600 it`]);
    fs.chmodSync(file, 0o600);
    expect(parseStorageConfig({ s3: s3({ secretAccessKeyFile: file }) }, { ramCapacityBytes: GiB, env: {} }).warnings).toEqual([]);
  });
});
