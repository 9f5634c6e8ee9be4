// Runtime options as containerd sends them (CreateTaskRequest.options or the stdin of `start`): runc's
// containerd.runc.v1.Options, CRI's runtimeoptions.v1.Options for a non-runc runtime_type, or the legacy
// containerd.linux.runc.CreateOptions that containerd 1.6/1.7 clients build for every runtime not named
// io.containerd.runc.* (WithNoPivotRoot, WithNoNewKeyring, WithShimCgroup, WithRestoreImagePath, …).
import { containerd, runtimeoptions } from '../gen/proto';
import { KybernateError } from '../errors';
import { defaultRuncRoot } from './bundle-state';
import type { CriuFlags } from './runc';

export interface RuntimeOptions {
  runcBinary: string;
  runcRoot: string;
  systemdCgroup: boolean;
  noPivot: boolean;
  noNewKeyring: boolean;
  /** CRIU's work directory for restores (logs); default <bundle>/criu-work. */
  criuWorkPath?: string;
  /**
   * A checkpoint to restore from, sent in the options: containerd hands runc-named runtimes this path as
   * CreateTaskRequest.checkpoint itself, other names (1.x clients' legacy CreateOptions) get it only here.
   */
  criuImagePath?: string;
  /** The cgroup `start` moves the shim into (src/shim/manager/shim-cgroup.ts). */
  shimCgroup?: string;
  /** CRIU flags for a restore, from legacy CreateOptions (runtime v1 passed them to `runc restore`). */
  restoreCriuFlags?: CriuFlags;
}

/** CRIU's --manage-cgroups-mode values, as runc passes them on. */
export const CGROUPS_MODES: readonly string[] = ['soft', 'full', 'strict', 'ignore'];

/** legacy CreateOptions → RuntimeOptions: the fields runtime v1 gave runc create/restore. */
function applyLegacyCreateOptions(o: containerd.linux.runc.CreateOptions, opts: RuntimeOptions): void {
  opts.noPivot = o.noPivotRoot;
  opts.noNewKeyring = o.noNewKeyring;
  if (o.shimCgroup) opts.shimCgroup = o.shimCgroup;
  if (o.criuWorkPath) opts.criuWorkPath = o.criuWorkPath;
  if (o.criuImagePath) opts.criuImagePath = o.criuImagePath;
  if (o.cgroupsMode && !CGROUPS_MODES.includes(o.cgroupsMode)) throw new Error(`invalid cgroups mode ${JSON.stringify(o.cgroupsMode)}`);
  const flags: CriuFlags = {
    tcpEstablished: o.openTcp, extUnixSk: o.externalUnixSockets, shellJob: o.terminal, fileLocks: o.fileLocks,
    ...(o.cgroupsMode ? { manageCgroupsMode: o.cgroupsMode } : {}),
  };
  if (Object.values(flags).some(Boolean)) opts.restoreCriuFlags = flags;
}

/** Type URLs come with or without a host prefix; compare the part after the last '/'. */
export function typeName(typeUrl: string): string {
  return typeUrl.slice(typeUrl.lastIndexOf('/') + 1);
}

export function parseRuntimeOptions(any: { type_url?: string | null; value?: Uint8Array | null } | null | undefined, namespace: string): RuntimeOptions {
  const opts: RuntimeOptions = {
    runcBinary: 'runc', runcRoot: defaultRuncRoot(namespace), systemdCgroup: false, noPivot: false, noNewKeyring: false,
  };
  if (!any?.type_url) return opts;
  const name = typeName(any.type_url);
  try {
    if (name === 'containerd.runc.v1.Options') {
      const o = containerd.runc.v1.Options.decode(any.value ?? new Uint8Array());
      if (o.binaryName) opts.runcBinary = o.binaryName;
      if (o.root) opts.runcRoot = `${o.root}/${namespace}`;
      opts.systemdCgroup = o.systemdCgroup;
      opts.noPivot = o.noPivotRoot;
      opts.noNewKeyring = o.noNewKeyring;
      if (o.criuWorkPath) opts.criuWorkPath = o.criuWorkPath;
      if (o.criuImagePath) opts.criuImagePath = o.criuImagePath;
      if (o.shimCgroup) opts.shimCgroup = o.shimCgroup;
    } else if (name === 'containerd.linux.runc.CreateOptions') {
      applyLegacyCreateOptions(containerd.linux.runc.CreateOptions.decode(any.value ?? new Uint8Array()), opts);
    } else if (name === 'runtimeoptions.v1.Options') {
      runtimeoptions.v1.Options.decode(any.value ?? new Uint8Array()); // validated; nothing in it applies to runc yet
    } else {
      throw new Error(`unsupported options type ${any.type_url}`);
    }
  } catch (err) {
    throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `invalid runtime options: ${(err as Error).message}`, { cause: err });
  }
  return opts;
}
