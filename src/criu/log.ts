// CRIU restore failures in one sentence with the fix. CRIU ends a failed restore with "Restoring FAILED."
// after the line that says why; the common causes are recognised here by CRIU's own message formats
// (criu/cr-restore.c, files-reg.c, mount.c, image.c, files.c, pie/restorer.c) and turned into what to do.
// Used by `kybernate process restore` and by the shim's container restore alike.
import fs from 'node:fs';
import type { ErrorCode } from '../errors';

/** What made the restore fail; stable, for classifying (never classify by `sentence`). */
export type RestoreFailure = 'pid-in-use' | 'file-missing' | 'file-changed' | 'mount' | 'criu-too-old';

export interface CriuLogDiagnosis {
  code: RestoreFailure;
  /** The KybernateError code a caller raises it with. */
  errorCode: ErrorCode;
  /** What went wrong and how to fix it, one sentence without the log path (callers add it). */
  sentence: string;
  /** The CRIU log line it was read from ('' when only the versions told). */
  line: string;
}

export interface DiagnoseOptions {
  /** CRIU version that wrote the images (manifest's criuVersion, e.g. "4.2.1"). */
  dumpCriuVersion?: string;
  /** CRIU version that restored (e.g. "4.1.1"). */
  criuVersion?: string;
  /** Where the pid holder is looked up; default /proc (the restoring pid namespace's). */
  proc?: string;
}

// "(00.105695) Error (criu/cr-restore.c:1237): Can't fork for 9812: File exists"; a restored task's own
// lines carry its pid after the timestamp: "(00.105695)   9812: Error (...)".
const ERROR_LINE = /^(?:\(\s*[\d.]+\)\s+)?(?:\d+:\s+)?Error \([^)]*\):\s?(.*)$/;

interface Rule {
  re: RegExp;
  make(m: RegExpExecArray, o: DiagnoseOptions): Omit<CriuLogDiagnosis, 'line'>;
}

const RULES: Rule[] = [
  // cr-restore.c fork_with_pid: clone3(set_tid) or clone after ns_last_pid failed with EEXIST.
  { re: /^Can't fork for (\d+): File exists/, make: (m, o) => pidInUse(Number(m[1]), o) },
  // cr-restore.c restore_task_with_children, kernels without clone3 set_tid: the kernel gave another pid.
  { re: /^Pid \d+ do not match expected (\d+)/, make: (m, o) => pidInUse(Number(m[1]), o) },
  // pie/restorer.c: a thread's id is taken (-EEXIST); the line does not say which.
  {
    re: /^Unable to create a thread: -17\b/,
    make: () => ({
      code: 'pid-in-use', errorCode: 'KYB_ERR_FAILED_PRECONDITION',
      sentence: 'a thread id of the checkpointed tree is in use by another process: stop that process, then restore again',
    }),
  },
  // files-reg.c do_open_reg_noseek_flags / open_path: the file the tree had open is not there.
  {
    re: /^Can't open file (.+?)(?: on restore)?: No such file or directory$/,
    make: (m) => ({
      code: 'file-missing', errorCode: 'KYB_ERR_FAILED_PRECONDITION',
      sentence: `the file ${abs(m[1]!)} that the tree had open is gone: put it back where it was, then restore again`,
    }),
  },
  // files-reg.c validate_file / open_path: the file is there but is not the one that was open.
  {
    re: /^File (.+?) has bad size (\d+) \(expect (\d+)\)/,
    make: (m) => fileChanged(m[1]!, `is ${m[2]} bytes, ${m[3]} at checkpoint time`),
  },
  {
    re: /^File (.+?) has bad mode (0[0-7]+) \(expect (0[0-7]+)\)/,
    make: (m) => fileChanged(m[1]!, `has mode ${m[2]}, ${m[3]} at checkpoint time`),
  },
  { re: /^File (.+?) has bad build-ID/, make: (m) => fileChanged(m[1]!, 'has another build-ID') },
  // mount.c resolve_external_mounts: an external (bind) mount of the checkpoint has no mapping now.
  {
    re: /^No mapping for \d+:(.+?) mountpoint$/,
    make: (m) => ({
      code: 'mount', errorCode: 'KYB_ERR_FAILED_PRECONDITION',
      sentence: `the mount point ${m[1]} was an external bind mount at checkpoint time and the restore maps nothing to it: ` +
        'restore with the same external mounts the checkpoint had (CRIU --ext-mount-map, a container\'s same bind mounts)',
    }),
  },
  {
    re: /^Mount \d+:(.+?) is autodetected external mount/,
    make: (m) => ({
      code: 'mount', errorCode: 'KYB_ERR_FAILED_PRECONDITION',
      sentence: `the mount point ${m[1]} is an external mount CRIU cannot recreate: restore with its mapping (--ext-mount-map auto, or the same bind mount)`,
    }),
  },
  // mount.c / mount-v2.c: mounting a mount point of the tree failed (its source or directory is gone).
  { re: /^Unable to mount (\S+) \S+ \(id=\d+\): (.+)$/, make: (m) => mountFailed(m[1]!, m[2]!) },
  { re: /^Can't mount at (\S+): (.+)$/, make: (m) => mountFailed(m[1]!, m[2]!) },
  { re: /^Can't bind-mount (?:\d+:(\S+) to \S+|at (\S+)): (.+)$/, make: (m) => mountFailed((m[1] ?? m[2])!, m[3]!) },
  { re: /^Unable to (?:mkdir|create) mountpoint (\S+): (.+)$/, make: (m) => mountFailed(m[1]!, m[2]!) },
  // image.c check_img_inventory, files.c, image.c open_image: images of a CRIU newer (or other) than this one.
  {
    re: /^(Not supported images version \d+|Unknown file type \d+|Unknown task state -?\d+|Unknown state in code -?\d+|Magic doesn't match for \S+|Head magic doesn't match for \S+)/,
    make: (m, o) => ({
      code: 'criu-too-old', errorCode: 'KYB_ERR_CHECKPOINT_INCOMPATIBLE',
      sentence: `this CRIU${o.criuVersion ? ` (${o.criuVersion})` : ''} cannot read the images (${m[1]})` +
        `${o.dumpCriuVersion ? `, written by CRIU ${o.dumpCriuVersion}` : ''}: restore with the CRIU version that checkpointed, or a newer one`,
    }),
  },
];

/** Reads the cause of a failed restore from CRIU's log text; undefined when it is none of the known ones. */
export function diagnoseCriuRestore(log: string, o: DiagnoseOptions = {}): CriuLogDiagnosis | undefined {
  const errors: string[] = [];
  for (const raw of log.split('\n')) {
    const m = ERROR_LINE.exec(raw.trimEnd());
    if (m) errors.push(m[1]!);
  }
  // The cause is the last recognised error: earlier ones are often warnings logged at error level
  // (RLIMIT_NOFILE), and the final "Restoring FAILED." says nothing.
  for (const line of errors.reverse()) {
    for (const rule of RULES) {
      const m = rule.re.exec(line);
      if (m) return { ...rule.make(m, o), line };
    }
  }
  if (o.dumpCriuVersion && o.criuVersion && compareVersions(o.criuVersion, o.dumpCriuVersion) < 0) {
    return {
      code: 'criu-too-old', errorCode: 'KYB_ERR_CHECKPOINT_INCOMPATIBLE', line: '',
      sentence: `the images were written by CRIU ${o.dumpCriuVersion} and this is CRIU ${o.criuVersion}: ` +
        `restore with CRIU >= ${o.dumpCriuVersion}`,
    };
  }
  return undefined;
}

/** diagnoseCriuRestore over a log file (its last MiB, where CRIU's closing lines are); undefined if unreadable. */
export function diagnoseCriuRestoreFile(logFile: string, o: DiagnoseOptions = {}): CriuLogDiagnosis | undefined {
  let text: string;
  try {
    const fd = fs.openSync(logFile, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      const from = Math.max(0, size - (1 << 20));
      const buf = Buffer.alloc(size - from);
      fs.readSync(fd, buf, 0, buf.length, from);
      text = buf.toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return undefined;
  }
  return diagnoseCriuRestore(text, o);
}

/** "1.2.3" against "1.10": negative, zero or positive. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.~+-]/).map((x) => Number.parseInt(x, 10) || 0);
  const pb = b.split(/[.~+-]/).map((x) => Number.parseInt(x, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** Who holds `pid` now, in words: its command line and, for a zombie, the parent that has not reaped it. */
export function describePid(pid: number, proc = '/proc'): string | undefined {
  const st = readProc(proc, pid, 'stat');
  if (st === undefined) return undefined;
  // stat: "pid (comm) S ppid ..."; comm may hold spaces and parentheses, so split at the last ')'.
  const close = st.lastIndexOf(')');
  const comm = st.slice(st.indexOf('(') + 1, close);
  const [state, ppid] = st.slice(close + 2).split(' ');
  // One line, however the arguments were written (a `python3 -c` script has newlines), and short.
  const args = (readProc(proc, pid, 'cmdline') ?? '').split('\0').filter(Boolean).join(' ').replace(/\s+/g, ' ').trim();
  const cmdline = args.length > 120 ? `${args.slice(0, 117)}...` : args;
  if (state === 'Z') {
    const parent = Number(ppid);
    const pcomm = readProc(proc, parent, 'comm')?.trim();
    return `a zombie of "${comm}" (it has exited, but its parent ${parent}${pcomm ? ` "${pcomm}"` : ''} has not reaped it)`;
  }
  return `"${cmdline || comm}" (${comm})`;
}

function pidInUse(pid: number, o: DiagnoseOptions): Omit<CriuLogDiagnosis, 'line'> {
  const holder = describePid(pid, o.proc);
  const fix = holder === undefined
    ? `pid ${pid} was in use when CRIU restored it and is free now: restore again`
    : holder.startsWith('a zombie')
      ? `pid ${pid} is held by ${holder}: have that parent reap it (or stop the parent), then restore again`
      : `pid ${pid} is in use by ${holder}: stop that process (kill ${pid}), then restore again; ` +
        'a restored tree gets its old pids back';
  return { code: 'pid-in-use', errorCode: 'KYB_ERR_FAILED_PRECONDITION', sentence: fix };
}

function fileChanged(file: string, how: string): Omit<CriuLogDiagnosis, 'line'> {
  return {
    code: 'file-changed', errorCode: 'KYB_ERR_FAILED_PRECONDITION',
    sentence: `the file ${abs(file)} that the tree had open changed since the checkpoint (it ${how}): ` +
      'put it back as it was at checkpoint time, or take a new checkpoint',
  };
}

function mountFailed(what: string, why: string): Omit<CriuLogDiagnosis, 'line'> {
  return {
    code: 'mount', errorCode: 'KYB_ERR_FAILED_PRECONDITION',
    sentence: `mounting ${what} for the restored tree failed (${why}): ` +
      'what the tree had mounted at checkpoint time must exist at restore too',
  };
}

function readProc(proc: string, pid: number, file: string): string | undefined {
  try {
    return fs.readFileSync(`${proc}/${pid}/${file}`, 'utf8');
  } catch {
    return undefined;
  }
}

/** CRIU logs reg-file paths relative to the root ("tmp/x"); users know them absolute. */
function abs(p: string): string {
  return p.startsWith('/') ? p : `/${p}`;
}
