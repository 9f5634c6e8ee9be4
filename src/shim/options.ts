// Runtime options as containerd sends them (CreateTaskRequest.options or the stdin of `start`): runc's
// containerd.runc.v1.Options, or CRI's runtimeoptions.v1.Options for a non-runc runtime_type.
import { containerd, runtimeoptions } from '../gen/proto';
import { KybernateError } from '../errors';
import { defaultRuncRoot } from './bundle-state';

export interface RuntimeOptions {
  runcBinary: string;
  runcRoot: string;
  systemdCgroup: boolean;
  noPivot: boolean;
  noNewKeyring: boolean;
  /** CRIU's work directory for restores (logs); default <bundle>/criu-work. */
  criuWorkPath?: string;
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
