// The checks behind `kybernate doctor`: each reports a status, what it found and, when not OK, the fix.
// "required" checks make the doctor exit non-zero when they FAIL; the others only warn. Facts about the
// node (versions, kernel, driver, GPUs) come from src/host, the one place they are probed; what is left
// here are the doctor's own tests (criu check, a test dump) and the verdicts.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cudaDriverVersion, cudaGpus, nvidiaDriverVersion } from '../../host/facts';
import { cgroupMode, kernelRelease, transparentHugepages, userfaultfdBuilt, vdsoMapped } from '../../host/kernel';
import { commandOutput, libcriuVersion, toolVersion, which } from '../../host/versions';
import { RUNTIME_NAME } from '../../version';
import type { CheckResult } from './result';
import { DEFAULT_ADDRESS, shimBinaryCheck } from './shim-binary';

export type { CheckResult, Status } from './result';

const PROBE_TIMEOUT_MS = 10_000;

const CRIU_FIX = 'install CRIU >= 4.0 with libcriu (Debian: apt-get install -t trixie criu libcriu-dev), ' +
  'or set KYBERNATE_CRIU / KYBERNATE_LIBCRIU to their paths';

export async function criuChecks(): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  let found: Awaited<ReturnType<typeof libcriuVersion>>;
  try {
    found = await libcriuVersion();
  } catch (err) {
    return [{ name: 'criu', status: 'FAIL', value: (err as Error).message, fix: CRIU_FIX, required: true }];
  }
  const v = found.version;
  const bin = found.binary ?? 'criu';
  const criu = await import('../../native/criu');
  out.push({
    name: 'criu',
    status: v >= 40000 ? 'OK' : 'WARN',
    value: `${found.formatted} (${bin}, libcriu ${process.env.KYBERNATE_LIBCRIU || 'libcriu.so.2'})`,
    fix: v >= 40000 ? undefined : 'CRIU < 4.0 is untested (3.17 fails on kernels >= 6.x); install CRIU >= 4.0',
    required: true,
    data: { version: v, binary: bin },
  });

  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'kybernate-doctor-'));
  try {
    let rpcError: string | undefined;
    try {
      await criu.check({ workDir: work });
    } catch (err) {
      const e = err as { message: string; logErrors?: string[] };
      rpcError = e.logErrors?.length ? e.logErrors.join('; ') : e.message;
    }
    if (rpcError === undefined) {
      out.push({ name: 'criu check', status: 'OK', value: 'Looks good (libcriu)', required: true, data: { via: 'libcriu' } });
    } else {
      // CRIU 4.1.1's RPC check crashes when libcriu sends no options; the command is authoritative.
      const cli = await commandOutput(bin, ['check']);
      const lines = cli.text.split('\n').filter((l) => l && !l.includes('RLIMIT_NOFILE'));
      out.push({
        name: 'criu check',
        status: cli.ok ? 'OK' : 'FAIL',
        value: `${lines[lines.length - 1] ?? ''} (by \`criu check\`; the RPC check failed: ${rpcError})`,
        fix: cli.ok ? undefined : `\`${bin} check\` fails: ${lines.join('; ')}; use a kernel CRIU supports`,
        required: true,
        data: { via: 'command', rpcError },
      });
    }
    out.push(await dumpProbe(criu, work));
    try {
      const f = await criu.features({ workDir: work });
      out.push({
        name: 'soft-dirty',
        status: f.memTrack ? 'OK' : 'WARN',
        value: f.memTrack ? 'memory tracking available' : 'not available (CONFIG_MEM_SOFT_DIRTY off)',
        fix: f.memTrack ? undefined : 'incremental pre-dumps need a kernel with CONFIG_MEM_SOFT_DIRTY=y',
        required: false,
        data: { memTrack: f.memTrack },
      });
      out.push(userfaultfd(f.lazyPages));
      out.push({
        name: 'pidfd store',
        status: f.pidfdStore ? 'OK' : 'WARN',
        value: f.pidfdStore ? 'available' : 'not available',
        fix: f.pidfdStore ? undefined : 'pid reuse between pre-dumps is not detected; kernel >= 5.4 has pidfd',
        required: false,
        data: { pidfdStore: f.pidfdStore },
      });
    } catch (err) {
      out.push({ name: 'criu features', status: 'WARN', value: (err as Error).message, fix: CRIU_FIX, required: false });
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  return out;
}

/**
 * `criu check` can pass where dumping hangs (seen in a VM: the hardware breakpoint that stops CRIU's
 * parasite never fires), so the doctor dumps a sleeping child of its own, leaving it running, under a
 * deadline; after a hang it tries again without hardware breakpoints.
 */
async function dumpProbe(criu: typeof import('../../native/criu'), work: string): Promise<CheckResult> {
  const name = 'criu dump';
  const sleep = which('sleep');
  if (sleep === undefined) return { name, status: 'WARN', value: 'not probed (no sleep binary)', required: false };
  const attempt = async (noBreakpoints?: boolean): Promise<{ ms: number } | { error: { code?: string; message: string; logErrors?: string[] } }> => {
    const child = spawn(sleep, ['60'], { detached: true, stdio: 'ignore' });
    const images = fs.mkdtempSync(path.join(work, 'dump-'));
    const t0 = Date.now();
    try {
      if (child.pid === undefined) throw new Error('could not start sleep');
      await criu.dump({ pid: child.pid, imagesDir: images, leaveRunning: true, timeoutMs: PROBE_TIMEOUT_MS, noBreakpoints });
      return { ms: Date.now() - t0 };
    } catch (err) {
      return { error: err as { code?: string; message: string; logErrors?: string[] } };
    } finally {
      child.kill('SIGKILL');
    }
  };
  const nobpEnv = process.env.KYBERNATE_CRIU_NO_BREAKPOINTS === '1';
  const first = await attempt();
  if ('ms' in first) {
    const how = nobpEnv ? ' without hardware breakpoints (KYBERNATE_CRIU_NO_BREAKPOINTS=1)' : '';
    return { name, status: 'OK', value: `dumped a test process in ${first.ms} ms${how}`, required: true };
  }
  if (first.error.code === 'ETIMEDOUT' && !nobpEnv) {
    const second = await attempt(true);
    if ('ms' in second) {
      return {
        name,
        status: 'WARN',
        value: `dumps hang with hardware breakpoints; without them a test dump took ${second.ms} ms`,
        fix: 'set KYBERNATE_CRIU_NO_BREAKPOINTS=1 for kybernate and the shim (debug registers do not work on this ' +
          'machine, e.g. a VM; CRIU then stops its parasite by syscall tracing)',
        required: true,
      };
    }
  }
  const hung = first.error.code === 'ETIMEDOUT';
  return {
    name,
    status: 'FAIL',
    value: hung ? `dumping a sleeping test process hung for ${PROBE_TIMEOUT_MS / 1000} s (criu was killed)` : first.error.message,
    fix: hung
      ? 'CRIU cannot dump on this kernel/machine; run `criu dump -v4 -t <pid>` and compare with the kernels CRIU supports'
      : `see CRIU's log lines: ${(first.error.logErrors ?? []).join('; ')}`,
    required: true,
  };
}

function userfaultfd(lazyPages: boolean | undefined): CheckResult {
  const present = userfaultfdBuilt();
  const ok = present && lazyPages !== false;
  return {
    name: 'userfaultfd',
    status: ok ? 'OK' : 'WARN',
    value: ok ? 'available (lazy restore possible)' : present ? 'present, but CRIU lazy-pages unsupported' : 'not built into the kernel',
    fix: ok ? undefined : 'lazy (post-copy) restore needs CONFIG_USERFAULTFD=y',
    required: false,
    data: { userfaultfd: present, lazyPages },
  };
}

export function kernelChecks(): CheckResult[] {
  const out: CheckResult[] = [];
  const vdso = vdsoMapped();
  out.push({
    name: 'vdso',
    status: vdso ? 'OK' : 'WARN',
    value: vdso ? 'mapped' : 'not mapped',
    fix: vdso ? undefined : 'boot with vdso enabled (CRIU proxifies the vDSO on restore)',
    required: false,
  });
  out.push(cgroupCheck());
  const thp = transparentHugepages();
  out.push({
    name: 'transparent hugepages',
    status: 'OK',
    value: thp === 'always' ? 'always (images of sparse heaps grow)' : thp,
    required: false,
    data: { thp },
  });
  out.push({ name: 'kernel', status: 'OK', value: kernelRelease(), required: false });
  return out;
}

function cgroupCheck(): CheckResult {
  const mode = cgroupMode();
  return {
    name: 'cgroups',
    status: 'OK',
    value: mode === 'hybrid' ? 'v1 (hybrid: v2 at /sys/fs/cgroup/unified)' : mode,
    required: false,
    data: { mode },
  };
}

export async function runtimeChecks(address = DEFAULT_ADDRESS): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  const containerd = which('containerd');
  if (containerd === undefined) {
    out.push({ name: 'containerd', status: 'FAIL', value: 'not found', fix: 'install containerd >= 1.6', required: true });
  } else {
    const r = await toolVersion('containerd', containerd);
    const version = r.version;
    out.push({
      name: 'containerd',
      status: r.ok ? 'OK' : 'FAIL',
      value: r.ok ? `${version ?? r.text} (${containerd})` : r.text,
      fix: r.ok ? undefined : 'containerd --version fails; reinstall containerd',
      required: true,
      data: { version },
    });
    out.push(await registered(containerd));
    out.push(shimBinaryCheck(address, containerd));
  }
  const runc = which('runc');
  if (runc === undefined) {
    out.push({ name: 'runc', status: 'FAIL', value: 'not found', fix: 'install runc >= 1.1', required: true });
  } else {
    const r = await toolVersion('runc', runc);
    const version = r.version;
    out.push({ name: 'runc', status: r.ok ? 'OK' : 'FAIL', value: `${version ?? r.text} (${runc})`, required: true, data: { version } });
  }
  const ipt = which('iptables-restore');
  out.push({
    name: 'iptables-restore',
    status: ipt ? 'OK' : 'FAIL',
    value: ipt ?? 'not found',
    fix: ipt ? undefined : 'CRIU locks the network of a container with it: apt-get install iptables',
    required: true,
  });
  return out;
}

async function registered(containerd: string): Promise<CheckResult> {
  const name = 'runtime registered';
  const fix = `add to /etc/containerd/config.toml: [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kybernate] ` +
    `runtime_type = "${RUNTIME_NAME}" (containerd 2.x: plugins."io.containerd.cri.v1.runtime"), then restart containerd`;
  let text = '';
  let where = '/etc/containerd/config.toml';
  try {
    text = fs.readFileSync(where, 'utf8');
  } catch {
    // no config file: containerd's defaults, which cannot name our runtime
  }
  if (!text.includes(RUNTIME_NAME)) {
    const dump = await commandOutput(containerd, ['config', 'dump']);
    if (dump.ok && dump.text.includes(RUNTIME_NAME)) {
      text = dump.text;
      where = 'containerd config dump';
    }
  }
  const ok = text.includes(RUNTIME_NAME);
  return {
    name,
    status: ok ? 'OK' : 'WARN',
    value: ok ? `${RUNTIME_NAME} (${where})` : `${RUNTIME_NAME} not in containerd's config`,
    fix: ok ? undefined : fix,
    required: false,
  };
}

export async function cudaChecks(): Promise<CheckResult[]> {
  // The kernel module's version is read without libcuda, so it is known even when libcuda is not found.
  const kernelModule = nvidiaDriverVersion() ?? null;
  const fixDriver = 'GPU checkpoint needs the NVIDIA driver >= 570 (libcuda.so.1 with cuCheckpointProcess*); ' +
    'set KYBERNATE_LIBCUDA if libcuda.so.1 is not on the loader path';
  let version: number;
  try {
    version = await cudaDriverVersion();
  } catch (err) {
    const e = err as { code?: string; message: string };
    const value = e.code === 'KYB_ERR_CUDA_NO_DRIVER' ? 'CUDA driver not found' : e.message;
    return [
      { name: 'CUDA driver', status: 'WARN', value, fix: fixDriver, required: false, data: { code: e.code, kernelModule } },
      { name: 'GPUs', status: 'WARN', value: 'none (no CUDA driver)', required: false, data: { gpus: [] } },
    ];
  }
  const out: CheckResult[] = [{
    name: 'CUDA driver',
    status: 'OK',
    value: `${Math.floor(version / 1000)}.${(version % 1000) / 10} (checkpoint API present)`,
    required: false,
    data: { version, kernelModule },
  }];
  try {
    const gpus = await cudaGpus();
    out.push({
      name: 'GPUs',
      status: gpus.length > 0 ? 'OK' : 'WARN',
      value: gpus.length > 0 ? gpus.map((g) => `${g.index}: ${g.name} ${(g.memoryBytes / 2 ** 30).toFixed(0)} GiB ${g.uuid}`).join(', ') : 'none',
      required: false,
      data: { gpus },
    });
  } catch (err) {
    out.push({ name: 'GPUs', status: 'WARN', value: (err as Error).message, required: false });
  }
  return out;
}

/** `address`: the containerd socket whose daemon's shim lookup is checked. */
export async function allChecks(address = DEFAULT_ADDRESS): Promise<CheckResult[]> {
  const [c, r, g] = await Promise.all([criuChecks(), runtimeChecks(address), cudaChecks()]);
  return [...c, ...kernelChecks(), ...r, ...g];
}
