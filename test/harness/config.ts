// containerd configuration files for the private test daemons.
import type { ContainerdVersion } from './containerd';

export interface DaemonPaths {
  root: string;
  state: string;
  address: string;
  /** Replaces /opt/containerd, so a test daemon writes nothing outside its own directory. */
  opt: string;
}

export const RUNTIME_TYPE = 'io.containerd.kybernate.v2';

// CRI needs CNI, a pause image and exclusive host ports, none of which the tests have; ctr does
// not use it. NRI listens on one fixed host socket (/var/run/nri/nri.sock) and would make
// concurrent daemons collide.
const DISABLED_V2 = ['io.containerd.grpc.v1.cri', 'io.containerd.nri.v1.nri'];
const DISABLED_V3 = [
  'io.containerd.grpc.v1.cri', 'io.containerd.cri.v1.runtime', 'io.containerd.cri.v1.images',
  'io.containerd.podsandbox.controller.v1.podsandbox', 'io.containerd.sandbox.controller.v1.shim',
  'io.containerd.nri.v1.nri',
];

const str = (s: string): string => JSON.stringify(s);
const list = (xs: string[]): string => `[${xs.map(str).join(', ')}]`;

/**
 * A config file for `containerd --config`: `version = 2` for 1.6/1.7, `version = 3` for 2.x.
 * The kybernate runtime is registered in the CRI section too, which is inert while CRI is
 * disabled but keeps this file a working template; ctr selects runtimes by type name
 * (`--runtime io.containerd.kybernate.v2`), which containerd resolves to the binary
 * `containerd-shim-kybernate-v2` on its PATH.
 */
export function daemonConfig(version: ContainerdVersion, p: DaemonPaths, logLevel: string): string {
  const v3 = version.startsWith('2.');
  const lines = [
    ...daemonHeader(version, p, logLevel, v3 ? DISABLED_V3 : DISABLED_V2),
    v3
      ? '[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.kybernate]'
      : '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kybernate]',
    `  runtime_type = ${str(RUNTIME_TYPE)}`,
    '',
  ];
  return lines.join('\n');
}

/** What every test daemon's config starts with: its own root, state, sockets, log level and opt path. */
export function daemonHeader(version: ContainerdVersion, p: DaemonPaths, logLevel: string, disabled: string[]): string[] {
  return [
    `version = ${version.startsWith('2.') ? 3 : 2}`,
    `root = ${str(p.root)}`,
    `state = ${str(p.state)}`,
    `disabled_plugins = ${list(disabled)}`,
    '',
    '[grpc]',
    `  address = ${str(p.address)}`,
    '',
    '[ttrpc]',
    `  address = ${str(`${p.address}.ttrpc`)}`,
    '',
    '[debug]',
    `  level = ${str(logLevel)}`,
    '',
    '[plugins."io.containerd.internal.v1.opt"]',
    `  path = ${str(p.opt)}`,
    '',
  ];
}
