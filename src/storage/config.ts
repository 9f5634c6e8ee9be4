// The agent's snapshot tiers, from the "storage" key of its config file. parseStorageConfig() checks every
// value (unknown keys refused, so a typo never silently becomes a default) and fills in the defaults;
// toPolicy() gives the HSM policy's view of it (policy.ts).
//
// Invariants (each has a test in test/storage/config.test.ts):
//  C1  The RAM tier always exists: dir /dev/shm/kybernate and the capacity the caller passes (half of
//      /dev/shm's size: the parser does no I/O to learn it) unless given. disk and s3 exist only when given.
//  C2  Every error is a StorageConfigError whose message starts with the key at fault
//      ("storage.disk.dir ...") and never holds a secret; warnings are returned, never thrown.
//  C3  Sizes: a whole number of bytes, or "N[.N]UNIT" with B, KB/MB/GB/TB (powers of 1000) or
//      KiB/MiB/GiB/TiB (powers of 1024), or "unlimited" (Infinity); more than 0. Durations: "N[.N]UNIT"
//      with ms, s, m, h, d, or "never" (the default: no demotion by age).
//  C4  Directories are absolute, not "/", and neither tier's lies inside the other's. The endpoint is an
//      http(s) URL without credentials, query or fragment; plain http is a warning unless it is loopback.
//  C5  Credentials: the access key id from s3.accessKeyId, else $AWS_ACCESS_KEY_ID; the secret from one of
//      s3.secretAccessKey or s3.secretAccessKeyFile (both: an error), else $AWS_SECRET_ACCESS_KEY; neither
//      found: an error. A secret file readable by group or others (not 0600) is a warning.
//  C6  Reading the secret file is the parser's only I/O, and it goes through opts.readSecretFile.
import fs from 'node:fs';
import path from 'node:path';
import { isLoopback } from '../hostport';
import type { PolicyConfig, TierName, TierPolicy } from './policy';

/** A wrong "storage" section; the agent reports it as its own ConfigError. */
export class StorageConfigError extends Error {
  override name = 'StorageConfigError';
}

export interface TierLimits {
  /** Infinity: unlimited. */
  capacityBytes: number;
  /** Undefined: never demoted by age. */
  demoteAfterMs?: number;
}

export interface S3Config {
  /** Undefined: AWS's endpoint for the region. */
  endpoint?: string;
  region: string;
  bucket: string;
  /** '' or ends with '/'. */
  prefix: string;
  /** Path-style URLs (bucket in the path), which Ceph RGW and MinIO want; default: true with an endpoint. */
  forcePathStyle: boolean;
  /** Parallel part transfers. */
  concurrency: number;
  capacityBytes: number;
  /** Holds the secret: never log it. */
  credentials: { accessKeyId: string; secretAccessKey: string; from: 'config' | 'file' | 'env' };
}

export interface StorageConfig {
  ram: { dir: string } & TierLimits;
  disk?: { dir: string } & TierLimits;
  s3?: S3Config;
  keepPerWorkload: number;
  /** Worth a log line at start (a secret file others can read, plain http, a demoteAfter without effect). */
  warnings: string[];
}

export interface SecretFile { text: string; mode: number }

export interface StorageConfigOptions {
  /** RAM tier capacity when the config gives none: half of /dev/shm's size, measured by the caller. */
  ramCapacityBytes: number;
  env?: Record<string, string | undefined>;
  readSecretFile?: (file: string) => SecretFile;
}

export const STORAGE_DEFAULTS = { ramDir: '/dev/shm/kybernate', keepPerWorkload: 3, s3Region: 'us-east-1', s3Concurrency: 8 };

/** The secret file's text and permission bits, from the file system. */
export function readSecretFile(file: string): SecretFile {
  const fd = fs.openSync(file, 'r');
  try {
    return { mode: fs.fstatSync(fd).mode & 0o777, text: fs.readFileSync(fd, 'utf8') };
  } finally {
    fs.closeSync(fd);
  }
}

const KEY = 'storage';

/** The tiers from the "storage" value (undefined: the RAM tier alone, with its defaults). */
export function parseStorageConfig(raw: unknown, opts: StorageConfigOptions): StorageConfig {
  const o = object(raw ?? {}, KEY, ['ram', 'disk', 's3', 'keepPerWorkload']);
  const warnings: string[] = [];
  const r = object(o.ram ?? {}, `${KEY}.ram`, ['dir', 'capacity', 'demoteAfter']);
  const ram = {
    dir: absPath(r.dir ?? STORAGE_DEFAULTS.ramDir, `${KEY}.ram.dir`),
    capacityBytes: r.capacity === undefined ? defaultRam(opts.ramCapacityBytes) : parseSize(r.capacity, `${KEY}.ram.capacity`),
    demoteAfterMs: parseDuration(r.demoteAfter, `${KEY}.ram.demoteAfter`),
  };
  const cfg: StorageConfig = { ram, keepPerWorkload: STORAGE_DEFAULTS.keepPerWorkload, warnings };
  if (o.disk !== undefined) {
    const d = object(o.disk, `${KEY}.disk`, ['dir', 'capacity', 'demoteAfter']);
    if (d.dir === undefined) throw new StorageConfigError(`${KEY}.disk.dir is required (an absolute directory for the chunk store)`);
    if (d.capacity === undefined) throw new StorageConfigError(`${KEY}.disk.capacity is required (a size like 200GiB, or "unlimited")`);
    cfg.disk = { dir: absPath(d.dir, `${KEY}.disk.dir`), capacityBytes: parseSize(d.capacity, `${KEY}.disk.capacity`), demoteAfterMs: parseDuration(d.demoteAfter, `${KEY}.disk.demoteAfter`) };
    if (inside(cfg.disk.dir, ram.dir) || inside(ram.dir, cfg.disk.dir)) {
      throw new StorageConfigError(`${KEY}.disk.dir ${cfg.disk.dir} and ${KEY}.ram.dir ${ram.dir} must be apart (neither inside the other)`);
    }
  }
  if (o.s3 !== undefined) cfg.s3 = parseS3(o.s3, opts, warnings);
  if (o.keepPerWorkload !== undefined) {
    const k = o.keepPerWorkload;
    if (typeof k !== 'number' || !Number.isSafeInteger(k) || k < 0) throw new StorageConfigError(`${KEY}.keepPerWorkload must be a whole number >= 0 (0 keeps all)`);
    cfg.keepPerWorkload = k;
  }
  const tiers = toPolicy(cfg).tiers;
  const lowest = tiers[tiers.length - 1];
  if (lowest.name !== 's3' && lowest.demoteAfterMs !== undefined) {
    warnings.push(`${KEY}.${lowest.name}.demoteAfter has no effect: no tier is configured below ${lowest.name}`);
  }
  return cfg;
}

function parseS3(raw: unknown, opts: StorageConfigOptions, warnings: string[]): S3Config {
  const at = `${KEY}.s3`;
  const o = object(raw, at, ['endpoint', 'region', 'bucket', 'prefix', 'forcePathStyle', 'accessKeyId', 'secretAccessKey', 'secretAccessKeyFile', 'capacity', 'concurrency']);
  let endpoint: string | undefined;
  if (o.endpoint !== undefined) {
    const s = str(o.endpoint, `${at}.endpoint`);
    let url: URL;
    try {
      url = new URL(s);
    } catch {
      throw new StorageConfigError(`${at}.endpoint must be a URL like https://s3.example:443, not ${JSON.stringify(s)}`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new StorageConfigError(`${at}.endpoint must be http:// or https://, not ${url.protocol}`);
    if (url.username || url.password) throw new StorageConfigError(`${at}.endpoint must not hold credentials (use accessKeyId and secretAccessKeyFile)`);
    if (url.search || url.hash || s.includes('?') || s.includes('#')) throw new StorageConfigError(`${at}.endpoint must have no query or fragment`);
    endpoint = url.href.replace(/\/$/, '');
    if (url.protocol === 'http:' && !isLoopback(url.hostname.replace(/^\[|\]$/g, ''))) {
      warnings.push(`${at}.endpoint ${endpoint} is plain http: snapshot bytes travel unencrypted`);
    }
  }
  const region = o.region === undefined ? STORAGE_DEFAULTS.s3Region : str(o.region, `${at}.region`);
  if (!/^[A-Za-z0-9_-]+$/.test(region)) throw new StorageConfigError(`${at}.region ${JSON.stringify(region)}: letters, digits, - and _ only`);
  if (o.bucket === undefined) throw new StorageConfigError(`${at}.bucket is required`);
  const bucket = str(o.bucket, `${at}.bucket`);
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) {
    throw new StorageConfigError(`${at}.bucket ${JSON.stringify(bucket)} is not a bucket name (3-63 of a-z 0-9 . -, starting and ending with a letter or digit)`);
  }
  if (o.prefix !== undefined && typeof o.prefix !== 'string') throw new StorageConfigError(`${at}.prefix must be a string`);
  let prefix = o.prefix ?? '';
  if (prefix.startsWith('/') || /[\\\x00-\x1f\x7f]/.test(prefix) || prefix.split('/').some((p, i, all) => (p === '' && i < all.length - 1) || p === '.' || p === '..')) {
    throw new StorageConfigError(`${at}.prefix ${JSON.stringify(prefix)} must be relative key segments like "node-a/" (no leading /, empty, . or .. segments)`);
  }
  if (prefix !== '' && !prefix.endsWith('/')) prefix += '/';
  if (o.forcePathStyle !== undefined && typeof o.forcePathStyle !== 'boolean') throw new StorageConfigError(`${at}.forcePathStyle must be true or false`);
  const concurrency = o.concurrency ?? STORAGE_DEFAULTS.s3Concurrency;
  if (typeof concurrency !== 'number' || !Number.isSafeInteger(concurrency) || concurrency < 1 || concurrency > 256) {
    throw new StorageConfigError(`${at}.concurrency must be a whole number from 1 to 256`);
  }
  return {
    endpoint, region, bucket, prefix, concurrency,
    forcePathStyle: (o.forcePathStyle as boolean | undefined) ?? endpoint !== undefined,
    capacityBytes: o.capacity === undefined ? Infinity : parseSize(o.capacity, `${at}.capacity`),
    credentials: credentials(o, opts, warnings),
  };
}

function credentials(o: Record<string, unknown>, opts: StorageConfigOptions, warnings: string[]): S3Config['credentials'] {
  const at = `${KEY}.s3`;
  const env = opts.env ?? process.env;
  const accessKeyId = o.accessKeyId === undefined ? env.AWS_ACCESS_KEY_ID || undefined : str(o.accessKeyId, `${at}.accessKeyId`);
  if (o.secretAccessKey !== undefined && o.secretAccessKeyFile !== undefined) {
    throw new StorageConfigError(`${at}.secretAccessKey and ${at}.secretAccessKeyFile: give one of them, not both`);
  }
  let secretAccessKey: string | undefined;
  let from: S3Config['credentials']['from'] = 'config';
  if (o.secretAccessKey !== undefined) {
    secretAccessKey = str(o.secretAccessKey, `${at}.secretAccessKey`);
  } else if (o.secretAccessKeyFile !== undefined) {
    const file = absPath(o.secretAccessKeyFile, `${at}.secretAccessKeyFile`);
    let secret: SecretFile;
    try {
      secret = (opts.readSecretFile ?? readSecretFile)(file);
    } catch (err) {
      throw new StorageConfigError(`${at}.secretAccessKeyFile ${file}: ${(err as Error).message}`);
    }
    secretAccessKey = secret.text.trim();
    if (secretAccessKey === '' || /\s/.test(secretAccessKey)) throw new StorageConfigError(`${at}.secretAccessKeyFile ${file} must hold the secret alone, on one line`);
    if (secret.mode & 0o077) {
      warnings.push(`${at}.secretAccessKeyFile ${file} is readable by others than its owner (mode 0${(secret.mode & 0o777).toString(8)}); chmod 600 it`);
    }
    from = 'file';
  } else if (env.AWS_SECRET_ACCESS_KEY) {
    secretAccessKey = env.AWS_SECRET_ACCESS_KEY;
    from = 'env';
  }
  if (accessKeyId === undefined || secretAccessKey === undefined) {
    const missing = accessKeyId === undefined ? `${at}.accessKeyId` : `${at}.secretAccessKey`;
    throw new StorageConfigError(`${missing}: no S3 credentials; give ${at}.accessKeyId and ${at}.secretAccessKey or ${at}.secretAccessKeyFile, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY`);
  }
  return { accessKeyId, secretAccessKey, from };
}

/** The policy's view: the configured tiers fastest first, and retention. */
export function toPolicy(cfg: StorageConfig): PolicyConfig {
  const tier = (name: TierName, t: TierLimits): TierPolicy =>
    (t.demoteAfterMs === undefined ? { name, capacityBytes: t.capacityBytes } : { name, capacityBytes: t.capacityBytes, demoteAfterMs: t.demoteAfterMs });
  const tiers = [tier('ram', cfg.ram)];
  if (cfg.disk) tiers.push(tier('disk', cfg.disk));
  if (cfg.s3) tiers.push(tier('s3', { capacityBytes: cfg.s3.capacityBytes }));
  return { tiers, keepPerWorkload: cfg.keepPerWorkload };
}

const UNITS: Record<string, number> = { B: 1, KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12, KiB: 2 ** 10, MiB: 2 ** 20, GiB: 2 ** 30, TiB: 2 ** 40 };
const DURATIONS: Record<string, number> = { ms: 1, s: 1e3, m: 60e3, h: 3600e3, d: 86400e3 };

/** C3: bytes, > 0; Infinity for "unlimited". */
export function parseSize(v: unknown, at: string): number {
  if (v === 'unlimited') return Infinity;
  const m = typeof v === 'string' ? /^(\d+(?:\.\d+)?)([KMGT]i?B|B)$/.exec(v) : null;
  const n = typeof v === 'number' ? v : m ? Math.floor(Number(m[1]) * UNITS[m[2]]) : NaN;
  if (!Number.isSafeInteger(n) || n <= 0) throw new StorageConfigError(`${at} must be a size like 512MiB, 8GiB or 1TB, or "unlimited", not ${JSON.stringify(v)}`);
  return n;
}

/** C3: milliseconds; undefined for "never" or no value. */
export function parseDuration(v: unknown, at: string): number | undefined {
  if (v === undefined || v === 'never') return undefined;
  const m = typeof v === 'string' ? /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(v) : null;
  const n = m ? Math.round(Number(m[1]) * DURATIONS[m[2]]) : NaN;
  if (!Number.isSafeInteger(n)) throw new StorageConfigError(`${at} must be a duration like 30s, 10m or 24h, or "never", not ${JSON.stringify(v)}`);
  return n;
}

function defaultRam(n: number): number {
  if (!(n > 0)) throw new StorageConfigError(`${KEY}.ram.capacity: give a size (the default, half of /dev/shm, is ${n} bytes)`);
  return Math.floor(n);
}

/** C4: an absolute path, normalized, not the root. */
function absPath(v: unknown, at: string): string {
  const s = str(v, at);
  if (!path.posix.isAbsolute(s) || s.includes('\0')) throw new StorageConfigError(`${at} must be an absolute path, not ${JSON.stringify(s)}`);
  const n = path.posix.normalize(s).replace(/(.)\/+$/, '$1');
  if (n === '/') throw new StorageConfigError(`${at} must not be / itself`);
  return n;
}

/** Whether `child` is `parent` or lies under it (both normalized). */
function inside(child: string, parent: string): boolean {
  return child === parent || child.startsWith(`${parent}/`);
}

function object(v: unknown, at: string, keys: string[]): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new StorageConfigError(`${at} must be an object`);
  for (const k of Object.keys(v)) {
    if (!k.startsWith('//') && !keys.includes(k)) throw new StorageConfigError(`${at}: unknown key ${JSON.stringify(k)} (the keys are ${keys.join(', ')})`);
  }
  return v as Record<string, unknown>;
}

function str(v: unknown, at: string): string {
  if (typeof v !== 'string' || v === '') throw new StorageConfigError(`${at} must be a non-empty string`);
  return v;
}
