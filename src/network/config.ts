// What a sandbox network is (a bridge, an IPv4 subnet, host-local IPAM state, where the CNI plugins are) and
// the names that become paths and interface names. Everything here is validated before any command runs:
// a sandbox name becomes /run/netns/<name> and a CNI container id, a network name a directory under the
// IPAM data directory, a bridge name a link name.
import * as path from 'node:path';
import { errInvalid } from '../errors';

export interface NetworkConfig {
  /** The CNI network name: host-local keeps its leases in <dataDir>/<name>. */
  name: string;
  /** The host bridge every sandbox's veth is attached to; it holds the subnet's gateway address. */
  bridge: string;
  /** IPv4 CIDR the sandboxes get their addresses from; the first host address is the gateway. */
  subnet: string;
  /** host-local IPAM state. */
  dataDir?: string;
  /** Where the CNI plugin binaries are looked for, in order. */
  pluginDirs?: string[];
}

export type ResolvedNetwork = Required<NetworkConfig>;

export const DEFAULT_NETWORK: ResolvedNetwork = {
  name: 'kybernate',
  bridge: 'kyb0',
  subnet: '10.88.64.0/24',
  dataDir: '/var/lib/cni/networks',
  // /opt/cni/bin first: where Kubernetes nodes and upstream releases put them; then Debian's package.
  pluginDirs: ['/opt/cni/bin', '/usr/lib/cni'],
};

/** Sandbox names: they become /run/netns/<name>, a CNI container id and a line in host-local's leases. */
export const SANDBOX_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;
const NETWORK_NAME = SANDBOX_NAME;
/** Link names are at most 15 bytes (IFNAMSIZ - 1). */
const BRIDGE_NAME = /^[a-z0-9][a-z0-9_-]{0,14}$/;

export function validateSandboxName(name: string): void {
  if (typeof name !== 'string' || !SANDBOX_NAME.test(name)) {
    throw errInvalid(`invalid sandbox name ${JSON.stringify(name)}: 1-63 of a-z 0-9 -, starting with a letter or digit`);
  }
}

/** `net` over the defaults, every field checked. */
export function resolveNetwork(net: Partial<NetworkConfig> = {}): ResolvedNetwork {
  const r: ResolvedNetwork = { ...DEFAULT_NETWORK, ...Object.fromEntries(Object.entries(net).filter(([, v]) => v !== undefined)) };
  if (!NETWORK_NAME.test(r.name)) throw errInvalid(`invalid network name ${JSON.stringify(r.name)}: 1-63 of a-z 0-9 -`);
  if (!BRIDGE_NAME.test(r.bridge)) throw errInvalid(`invalid bridge name ${JSON.stringify(r.bridge)}: 1-15 of a-z 0-9 _ -`);
  parseSubnet(r.subnet);
  if (!path.isAbsolute(r.dataDir)) throw errInvalid(`IPAM data directory must be an absolute path, not ${JSON.stringify(r.dataDir)}`);
  if (r.pluginDirs.length === 0 || r.pluginDirs.some((d) => !path.isAbsolute(d))) {
    throw errInvalid(`CNI plugin directories must be absolute paths, not ${JSON.stringify(r.pluginDirs)}`);
  }
  return r;
}

export interface Subnet { base: number; prefix: number }

function parseIPv4(s: string): number | undefined {
  const parts = s.split('.');
  if (parts.length !== 4 || parts.some((p) => !/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > 255)) return undefined;
  return parts.reduce((n, p) => n * 256 + Number(p), 0);
}

/**
 * An IPv4 CIDR with a prefix of 8-30 (a /31 or /32 leaves no address for a gateway and a sandbox) and no
 * host bits set.
 */
export function parseSubnet(cidr: string): Subnet {
  const m = /^([0-9.]+)\/([0-9]{1,2})$/.exec(cidr);
  const base = m ? parseIPv4(m[1]) : undefined;
  const prefix = m ? Number(m[2]) : NaN;
  if (base === undefined || !(prefix >= 8 && prefix <= 30)) {
    throw errInvalid(`invalid subnet ${JSON.stringify(cidr)}: an IPv4 CIDR with a prefix of 8 to 30`);
  }
  if (base % 2 ** (32 - prefix) !== 0) throw errInvalid(`invalid subnet ${JSON.stringify(cidr)}: host bits are set`);
  return { base, prefix };
}

/** True when `ip` (dotted IPv4) lies inside `cidr`. */
export function inSubnet(ip: string, cidr: string): boolean {
  const n = parseIPv4(ip);
  const s = parseSubnet(cidr);
  return n !== undefined && Math.floor(n / 2 ** (32 - s.prefix)) === s.base / 2 ** (32 - s.prefix);
}
