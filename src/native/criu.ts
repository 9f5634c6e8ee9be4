// CRIU through libcriu (native/criu.cc): version, check, feature check, dump and restore.
// libcriu.so.2 is loaded on first use (KYBERNATE_LIBCRIU overrides the file) and talks to the `criu`
// binary (KYBERNATE_CRIU, else `criu` on PATH or in /usr/sbin, /usr/local/sbin), which the addon
// starts in swrk mode as a child of this process for every call (see native/criu.h for reaping).
//
// Calls run on the libuv threadpool and hold a thread for the whole dump or restore, so at most
// MAX_CONCURRENT run at once and the rest wait in FIFO order; the pool keeps threads for fs and dns.
import fs from 'node:fs';
import path from 'node:path';
import { NativeError } from './errors';
import { nativeBinding } from './binding';
import { Semaphore } from './semaphore';

/** CRIU's cgroup handling (criu --manage-cgroups=<mode>). */
export type CgroupMode = 'ignore' | 'none' | 'props' | 'soft' | 'full' | 'strict' | 'default';
const CG_MODES: readonly CgroupMode[] = ['ignore', 'none', 'props', 'soft', 'full', 'strict', 'default'];

export interface CriuCommon {
  /** criu binary; default KYBERNATE_CRIU or `criu` found on PATH. */
  binary?: string;
  /** Kills criu after this long (the dumped process is released and keeps running); 0 = none. */
  timeoutMs?: number;
  /**
   * Stop the parasite by syscall tracing instead of a hardware breakpoint (CRIU_FAULT=130). Needed where
   * debug registers do not work, e.g. some VMs, where every dump otherwise hangs. Default: the
   * environment variable KYBERNATE_CRIU_NO_BREAKPOINTS=1.
   */
  noBreakpoints?: boolean;
}

export interface DumpOptions extends CriuCommon {
  pid: number;
  imagesDir: string;
  /** Where criu writes its log (and work files); default imagesDir. */
  workDir?: string;
  /** Log file name inside workDir; default 'dump.log'. */
  logFile?: string;
  /** 0..4; default 4 (the log is only read on failure, and then details matter). */
  logLevel?: number;
  leaveRunning?: boolean;
  shellJob?: boolean;
  tcpEstablished?: boolean;
  extUnixSk?: boolean;
  fileLocks?: boolean;
  manageCgroupsMode?: CgroupMode;
  /** criu --ext-mount-map KEY:VAL pairs. */
  extMounts?: ReadonlyArray<readonly [string, string]>;
  /** criu --external entries. */
  external?: readonly string[];
}

export type RestoreOptions = Omit<DumpOptions, 'pid' | 'leaveRunning'>;

export interface CriuFeatures {
  memTrack: boolean;
  lazyPages: boolean;
  pidfdStore: boolean;
}

/** A failed CRIU call: `logErrors` are CRIU's own "Error" lines, `logFile` the whole log. */
export class CriuError extends NativeError {
  readonly logErrors: readonly string[];
  readonly logFile?: string;
  /** errno CRIU reported (informational: libcriu keeps it in a process-global). */
  readonly criuErrno: number;
  /** libcriu.so.2 (or a required symbol) is missing. */
  readonly criuMissing: boolean;
  constructor(base: NativeError, extra: { logErrors?: unknown; logFile?: unknown; criuErrno?: unknown; criuMissing?: unknown }) {
    super(base.message, base);
    this.name = 'CriuError';
    this.logErrors = Array.isArray(extra.logErrors) ? extra.logErrors.map(String) : [];
    if (typeof extra.logFile === 'string') this.logFile = extra.logFile;
    this.criuErrno = typeof extra.criuErrno === 'number' ? extra.criuErrno : 0;
    this.criuMissing = extra.criuMissing === true;
    if (base.stack !== undefined) this.stack = base.stack.replace(/^NativeError/, 'CriuError');
  }
}

interface RawOptions {
  binary: string;
  libcriu: string;
  timeoutMs?: number;
  noBreakpoints?: boolean;
  imagesDir?: string;
  workDir?: string;
  logFile?: string;
  logLevel?: number;
  pid?: number;
  leaveRunning?: boolean;
  shellJob?: boolean;
  tcpEstablished?: boolean;
  extUnixSk?: boolean;
  fileLocks?: boolean;
  manageCgroupsMode?: number;
  extMounts?: Array<[string, string]>;
  external?: string[];
}

/** The addon's CRIU exports (native/criu.h). */
interface CriuBinding {
  criuVersion(o: RawOptions): Promise<number>;
  criuCheck(o: RawOptions): Promise<void>;
  criuFeatures(o: RawOptions): Promise<CriuFeatures>;
  criuDump(o: RawOptions): Promise<void>;
  criuRestore(o: RawOptions): Promise<number>;
}

const b = (): CriuBinding => nativeBinding() as CriuBinding;

export const MAX_CONCURRENT = 2;

const slots = new Semaphore(MAX_CONCURRENT);
const slot = <T>(fn: () => Promise<T>): Promise<T> => slots.run(fn);

/** The criu binary the addon runs: KYBERNATE_CRIU, else the first `criu` on PATH or in the sbin dirs. */
export function criuBinary(): string | undefined {
  const fromEnv = process.env.KYBERNATE_CRIU;
  if (fromEnv) return path.resolve(fromEnv);
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/local/sbin', '/usr/sbin', '/sbin'];
  for (const d of dirs) {
    if (!d) continue;
    const p = path.join(d, 'criu');
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

function raw(common: CriuCommon): RawOptions {
  const binary = common.binary !== undefined ? path.resolve(common.binary) : criuBinary();
  if (binary === undefined) {
    throw new CriuError(
      new NativeError('criu binary not found (install CRIU >= 4.0, or set KYBERNATE_CRIU to its path)', {
        code: 'ENOENT',
        errno: 2,
        op: 'criu',
      }),
      { criuMissing: true },
    );
  }
  const out: RawOptions = { binary, libcriu: process.env.KYBERNATE_LIBCRIU || 'libcriu.so.2' };
  if (common.timeoutMs !== undefined) out.timeoutMs = common.timeoutMs;
  out.noBreakpoints = common.noBreakpoints ?? process.env.KYBERNATE_CRIU_NO_BREAKPOINTS === '1';
  return out;
}

/** Runs one addon call in a slot; failures become CriuError with the caller's stack. */
async function call<T>(fn: (bd: CriuBinding) => Promise<T>): Promise<T> {
  const site = new Error();
  return slot(async () => {
    try {
      return await fn(b());
    } catch (err) {
      const base = NativeError.from(err, site);
      if (!(base instanceof NativeError)) throw base;
      throw new CriuError(base, err as Record<string, unknown>);
    }
  });
}

function flags(o: DumpOptions | RestoreOptions, r: RawOptions): RawOptions {
  r.imagesDir = o.imagesDir;
  if (o.workDir !== undefined) r.workDir = o.workDir;
  r.logLevel = o.logLevel ?? 4;
  r.shellJob = o.shellJob ?? false;
  r.tcpEstablished = o.tcpEstablished ?? false;
  r.extUnixSk = o.extUnixSk ?? false;
  r.fileLocks = o.fileLocks ?? false;
  if (o.manageCgroupsMode !== undefined) {
    const i = CG_MODES.indexOf(o.manageCgroupsMode);
    if (i < 0) throw new TypeError(`manageCgroupsMode must be one of ${CG_MODES.join(', ')}`);
    r.manageCgroupsMode = i;
  }
  if (o.extMounts) r.extMounts = o.extMounts.map(([k, v]) => [k, v]);
  if (o.external) r.external = [...o.external];
  return r;
}

/** CRIU's version as major*10000 + minor*100 + sublevel (40101 = 4.1.1). */
export async function version(opts: CriuCommon = {}): Promise<number> {
  const r = raw(opts);
  return call((bd) => bd.criuVersion(r));
}

/** "4.1.1" from version()'s number. */
export function formatVersion(v: number): string {
  return `${Math.floor(v / 10000)}.${Math.floor(v / 100) % 100}.${v % 100}`;
}

/**
 * `criu check` over RPC. CRIU 4.1.1's RPC check crashes when libcriu sends it no options (criu
 * segfaults in its check child), which this reports as a failure without log lines; the doctor then
 * runs the `criu check` command as well.
 */
export async function check(opts: CriuCommon & { workDir?: string } = {}): Promise<void> {
  const r = raw(opts);
  if (opts.workDir !== undefined) {
    r.workDir = opts.workDir;
    r.logFile = 'check.log';
  }
  return call((bd) => bd.criuCheck(r));
}

/** Which optional CRIU features this kernel and criu support. */
export async function features(opts: CriuCommon & { workDir?: string } = {}): Promise<CriuFeatures> {
  const r = raw(opts);
  if (opts.workDir !== undefined) {
    r.workDir = opts.workDir;
    r.logFile = 'features.log';
  }
  return call((bd) => bd.criuFeatures(r));
}

/** Dumps the process tree rooted at pid into imagesDir (which must exist). */
export async function dump(opts: DumpOptions): Promise<void> {
  if (!Number.isInteger(opts.pid) || opts.pid <= 0) throw new TypeError('pid must be a positive integer');
  const r = flags(opts, raw(opts));
  r.pid = opts.pid;
  r.leaveRunning = opts.leaveRunning ?? false;
  r.logFile = opts.logFile ?? 'dump.log';
  return call((bd) => bd.criuDump(r));
}

/**
 * Restores imagesDir; resolves with the restored root's pid. The tree is restored detached: its
 * parent, criu, exits, so it is re-parented to the nearest child subreaper above this process (the
 * shim, which reaps it) or to init (the CLI). The pid equals the dumped one: CRIU restores pids.
 */
export async function restore(opts: RestoreOptions): Promise<number> {
  const r = flags(opts, raw(opts));
  r.logFile = opts.logFile ?? 'restore.log';
  return call((bd) => bd.criuRestore(r));
}
