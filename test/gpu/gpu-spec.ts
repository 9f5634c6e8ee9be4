// OCI runtime specs for GPU containers without the NVIDIA container toolkit (GPU suite only; runs on the
// GPU machine). What a CUDA process needs from the host: the /dev/nvidia* nodes (numbers read from the
// host), cgroup device rules that allow them, the driver's user-space libraries at their real paths, and
// for PyTorch its Python prefix. The rootfs is a directory of mount points whose bin/lib/lib64/sbin are
// symlinks into usr/, and the host's /usr is bind-mounted there: a bind of a host path that is itself
// a symlink (/lib on Ubuntu) breaks CRIU's mount restore, so only real directories are ever bound.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface DeviceNode { path: string; major: number; minor: number }

export interface HostProbe {
  devices: DeviceNode[];
  /** Driver libraries: the name ld.so finds (ldconfig -p) and the file it resolves to. */
  driverLibs: Array<{ link: string; real: string }>;
  nvidiaSmi?: string;
  /** Every mount point of this host (/proc/self/mountinfo), for the mounts nested under a bound tree. */
  mountPoints: string[];
  /**
   * From python3 itself, when it imports torch: sys.executable as python names it (a venv's bin/python3
   * must be started by that name, or python does not find the venv), sys.prefix as named and resolved,
   * and torch's real directory.
   */
  python?: { executable: string; prefix: string; realPrefix: string; torchDir: string; version: string };
}

/** Trees every GPU container binds whole (read-only). */
export const BASE_TREES = ['/usr', '/etc'];
const ROOT_LINKS: Record<string, string> = { bin: 'usr/bin', lib: 'usr/lib', lib64: 'usr/lib64', sbin: 'usr/sbin' };
const DEVICE_NAMES = /^nvidia(\d+|ctl|-uvm|-uvm-tools|-modeset)$/;
const DRIVER_LIBS = /^lib(cuda|nvidia-ml|nvidia-ptxjitcompiler|nvidia-nvvm|nvidia-gpucomp|nvidia-allocator)\.so(\.\d+)*$/;

/** glibc's major()/minor() of a 64-bit dev_t. */
function devNumbers(rdev: bigint): { major: number; minor: number } {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return { major: Number(major), minor: Number(minor) };
}

function listDevices(): DeviceNode[] {
  const out: DeviceNode[] = [];
  for (const name of fs.readdirSync('/dev').sort()) {
    if (!DEVICE_NAMES.test(name)) continue;
    const p = path.join('/dev', name);
    const st = fs.statSync(p, { bigint: true });
    if (!st.isCharacterDevice()) continue;
    out.push({ path: p, ...devNumbers(st.rdev) });
  }
  return out;
}

function listDriverLibs(): Array<{ link: string; real: string }> {
  const text = execFileSync('ldconfig', ['-p'], { encoding: 'utf8' });
  const seen = new Set<string>();
  const out: Array<{ link: string; real: string }> = [];
  for (const line of text.split('\n')) {
    // "	libcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1"
    const m = /^\s*(\S+) \(([^)]*)\) => (\S+)$/.exec(line);
    if (!m || !DRIVER_LIBS.test(m[1]!) || !m[2]!.includes('x86-64') || seen.has(m[3]!)) continue;
    seen.add(m[3]!);
    out.push({ link: m[3]!, real: fs.realpathSync(m[3]!) });
  }
  return out;
}

/** mountinfo's 5th field, with its octal escapes (\040 for a space) undone. */
function listMountPoints(): string[] {
  const text = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  return text.split('\n').filter(Boolean)
    .map((l) => l.split(' ')[4]!.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
}

function which(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    const p = path.join(dir || '.', name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return fs.realpathSync(p);
    } catch { /* next */ }
  }
  return undefined;
}

const PY_PROBE = [
  'import os, sys, torch',
  'print(sys.executable)',
  'print(sys.prefix)',
  'print(os.path.realpath(sys.prefix))',
  'print(os.path.dirname(os.path.realpath(torch.__file__)))',
  'print(torch.__version__)',
].join('\n');

function probePython(python: string): HostProbe['python'] {
  try {
    const [executable, prefix, realPrefix, torchDir, version] = execFileSync(python, ['-c', PY_PROBE],
      { encoding: 'utf8', timeout: 120_000, stdio: ['ignore', 'pipe', 'pipe'] }).trim().split('\n');
    if (!executable || !prefix || !realPrefix || !torchDir || !version) return undefined;
    return { executable, prefix, realPrefix, torchDir, version };
  } catch {
    return undefined;
  }
}

/** Reads what GPU containers need from this host. `python` (e.g. 'python3') also probes PyTorch. */
export function probeHost(python?: string): HostProbe {
  const probe: HostProbe = {
    devices: listDevices(), driverLibs: listDriverLibs(), nvidiaSmi: which('nvidia-smi'), mountPoints: listMountPoints(),
  };
  if (python) probe.python = probePython(python);
  return probe;
}

function covered(p: string, trees: readonly string[]): boolean {
  return trees.some((t) => p === t || p.startsWith(`${t}/`));
}

/**
 * Where a host path lands inside the container: its directory resolved on the host. /lib/libcuda.so.1 on a
 * host whose /lib is a link to usr/lib is /usr/lib/libcuda.so.1, inside the /usr bind (the rootfs has the
 * same lib -> usr/lib link).
 */
function resolvedDir(p: string): string {
  try {
    return path.join(fs.realpathSync(path.dirname(p)), path.basename(p));
  } catch {
    return p;
  }
}

export interface Bind { source: string; destination: string; readonly?: boolean }

export interface BindPolicy {
  /** Bind each driver library file at its real path (and at the name ld.so finds) even where a bound tree covers it. */
  explicitDriverLibs?: boolean;
}

/**
 * The host paths a GPU container binds besides BASE_TREES: driver libraries, nvidia-smi and the Python
 * tree that holds torch, each only where no bound tree covers it already (a file bound onto a file inside
 * a read-only bind would be one more mount for CRIU to restore, for nothing); then every host mount
 * nested in a bound tree, because a plain bind leaves those out (on the lent GPU machines the driver's
 * /usr/local/nvidia is such a mount) and a recursive one would hide them from runc, which tells CRIU
 * about the spec's binds only.
 */
export function hostBinds(probe: HostProbe, withPython: boolean, policy: BindPolicy = {}): Bind[] {
  const trees = [...BASE_TREES];
  const binds: Bind[] = [];
  const add = (source: string, dest = source): void => {
    const destination = resolvedDir(dest);
    if (covered(destination, trees)) return;
    binds.push({ source, destination, readonly: true });
    if (fs.statSync(source).isDirectory()) trees.push(destination);
  };
  if (withPython && probe.python) {
    add(probe.python.realPrefix);
    if (probe.python.prefix !== probe.python.realPrefix) add(probe.python.realPrefix, probe.python.prefix);
    add(path.dirname(probe.python.torchDir));
    add(fs.realpathSync(path.dirname(probe.python.executable)), path.dirname(probe.python.executable));
  }
  if (probe.nvidiaSmi) add(probe.nvidiaSmi);
  const nested = probe.mountPoints.filter((m) => trees.some((t) => m.startsWith(`${t}/`)));
  for (const m of [...new Set(nested)].sort((x, y) => x.length - y.length || x.localeCompare(y))) {
    binds.push({ source: m, destination: m, readonly: true });
  }
  for (const lib of probe.driverLibs) {
    if (policy.explicitDriverLibs) {
      binds.push({ source: lib.real, destination: lib.real, readonly: true });
      const link = resolvedDir(lib.link);
      if (link !== lib.real) binds.push({ source: lib.real, destination: link, readonly: true });
    } else {
      add(lib.real);
      if (lib.link !== lib.real) add(lib.real, lib.link);
    }
  }
  return binds;
}

/** Creates (or completes) a rootfs directory: mount points and the bin/lib/lib64/sbin links into usr. */
export function prepareRootfs(dir: string, binds: readonly Bind[]): void {
  for (const d of ['usr', 'etc', 'tmp', 'proc', 'dev', 'sys']) fs.mkdirSync(path.join(dir, d), { recursive: true });
  for (const [name, target] of Object.entries(ROOT_LINKS)) {
    const p = path.join(dir, name);
    // lstat: the links dangle on the host (the rootfs's usr/ is an empty mount point there).
    let present = true;
    try { fs.lstatSync(p); } catch { present = false; }
    if (!present) fs.symlinkSync(target, p);
  }
  for (const b of binds) {
    const dest = path.join(dir, b.destination);
    if (covered(b.destination, BASE_TREES) || fs.existsSync(dest)) continue;
    if (fs.statSync(b.source).isDirectory()) {
      fs.mkdirSync(dest, { recursive: true });
    } else {
      fs.mkdirSync(path.dirname(dest), { recursive: true });
      fs.writeFileSync(dest, '');
    }
  }
}

export interface GpuSpecOptions {
  id: string;
  rootfs: string;
  args: string[];
  env?: string[];
  /** Extra binds (the suite's own files); hostBinds() are added by the caller. */
  binds: readonly Bind[];
  probe: HostProbe;
  /** cgroup v2 path, relative to the cgroup root; default /kybernate-gpu/<id>. */
  cgroupsPath?: string;
}

const CAPS = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FSETID', 'CAP_FOWNER', 'CAP_MKNOD', 'CAP_NET_RAW', 'CAP_SETGID',
  'CAP_SETUID', 'CAP_SETFCAP', 'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_CHROOT', 'CAP_KILL',
  'CAP_AUDIT_WRITE', 'CAP_IPC_LOCK',
];

/**
 * An OCI spec (runtime-spec 1.0.2) for a GPU container: the host's network namespace (CRIU locks a
 * container's own network with iptables, which the GPU machine lacks; in the host's namespace it locks
 * nothing), its own pid/ipc/uts/mount namespaces, no masked paths (each is one more mount to restore).
 */
export function buildGpuSpec(o: GpuSpecOptions): Record<string, unknown> {
  const bindMount = (b: Bind): Record<string, unknown> => ({
    destination: b.destination, type: 'bind', source: b.source,
    options: ['bind', 'nosuid', ...(b.readonly === false ? [] : ['ro'])],
  });
  const mounts = [
    { destination: '/proc', type: 'proc', source: 'proc' },
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
    { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=1g'] },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
    ...BASE_TREES.map((t) => bindMount({ source: fs.realpathSync(t), destination: t })),
    { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777'] },
    ...o.binds.map(bindMount),
  ];
  const devices = o.probe.devices.map((d) => ({ path: d.path, type: 'c', major: d.major, minor: d.minor, fileMode: 0o666, uid: 0, gid: 0 }));
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: o.args,
      env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'HOME=/tmp', ...(o.env ?? [])],
      cwd: '/tmp',
      capabilities: { bounding: CAPS, effective: CAPS, permitted: CAPS },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    root: { path: o.rootfs, readonly: false },
    hostname: o.id,
    mounts,
    linux: {
      devices,
      resources: {
        devices: [
          { allow: false, access: 'rwm' },
          ...o.probe.devices.map((d) => ({ allow: true, type: 'c', major: d.major, minor: d.minor, access: 'rwm' })),
        ],
      },
      cgroupsPath: o.cgroupsPath ?? `/kybernate-gpu/${o.id}`,
      namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }],
    },
  };
}
