// A workload's network sandbox, as a pod gets one: its own network namespace (/run/netns/<name>) with `lo`
// up and an `eth0` veth to a host bridge, an IPv4 address from the network's subnet (host-local IPAM) and a
// default route through the bridge. The host reaches the sandbox's address directly over the bridge.
// Containers join it by path (OCI linux.namespaces network path; `ctr run --with-ns network:<netns>`), which
// runc treats as an external namespace: checkpoint/restore keeps it and CRIU restores sockets inside it.
//
// Invariants:
// - createSandbox either returns a complete sandbox or leaves nothing of its own behind: on any failure the
//   CNI DEL releases the address and the veth, and the namespace it created is deleted. A namespace it did
//   not create is never touched.
// - createSandbox of a name that exists returns that sandbox when it is one of this network (same name,
//   same sandbox: callers may retry), and refuses with KYB_ERR_ALREADY_EXISTS otherwise.
// - removeSandbox is idempotent and must be given the network the sandbox was created with (host-local's
//   leases live under <dataDir>/<network name>); it removes whatever namespace has the name. It runs CNI DEL first (also when the namespace is gone, so
//   that a lease left by a crash is released), then deletes the namespace.
import { KybernateError } from '../errors';
import { execPlugin, bridgeConfig, findPlugins, loopbackConfig, type CniCall, type CniResult } from './cni';
import { inSubnet, resolveNetwork, validateSandboxName, type NetworkConfig, type ResolvedNetwork } from './config';
import { addNetns, defaultGateway, delNetns, deleteIdleBridge, ipv4Of, netnsExists, netnsPath } from './netns';

export { DEFAULT_NETWORK, SANDBOX_NAME, type NetworkConfig } from './config';
export { hasCriuLock, releaseCriuLock } from './criu-lock';

export interface Sandbox {
  name: string;
  /** /run/netns/<name>: what a container's network namespace path is set to. */
  netns: string;
  /** The workload's IPv4 address. */
  ip: string;
  /** The bridge's address: the sandbox's default route. */
  gateway: string;
}

/** The interface inside the sandbox that faces the bridge. */
const IFNAME = 'eth0';

const call = (command: CniCall['command'], name: string, netns: string, ifname: string, net: ResolvedNetwork): CniCall =>
  ({ command, containerId: name, netns, ifname, pluginDirs: net.pluginDirs });

/** Creates the sandbox `name` on network `net` (defaults: DEFAULT_NETWORK), or returns it when it exists. */
export async function createSandbox(name: string, net?: Partial<NetworkConfig>): Promise<Sandbox> {
  validateSandboxName(name);
  const n = resolveNetwork(net);
  const plugins = findPlugins(n.pluginDirs);
  if (netnsExists(name)) return existing(name, n);
  try {
    await addNetns(name);
  } catch (err) {
    if (KybernateError.is(err) && err.code === 'KYB_ERR_ALREADY_EXISTS') return existing(name, n);
    throw err;
  }
  const netns = netnsPath(name);
  try {
    // The namespace is new, so an address leased under this name is a crash's leftover: release it first
    // (host-local refuses a second lease for one container id). Without CNI_NETNS the plugin only does that.
    await execPlugin(plugins.bridge, call('DEL', name, '', IFNAME, n), bridgeConfig(n));
    await execPlugin(plugins.loopback, call('ADD', name, netns, 'lo', n), loopbackConfig(n));
    const result = await execPlugin(plugins.bridge, call('ADD', name, netns, IFNAME, n), bridgeConfig(n));
    return { name, netns, ...addressOf(result, name, n) };
  } catch (err) {
    // Undo in reverse: the address and the veth, then the namespace (which takes `lo` with it).
    await execPlugin(plugins.bridge, call('DEL', name, netns, IFNAME, n), bridgeConfig(n)).catch(() => undefined);
    await delNetns(name).catch(() => undefined);
    throw err;
  }
}

/** The address and gateway of the bridge plugin's result, which must lie in the network's subnet. */
function addressOf(result: CniResult, name: string, n: ResolvedNetwork): { ip: string; gateway: string } {
  const ipc = result.ips?.find((i) => i.address?.includes('.'));
  const ip = ipc?.address?.split('/')[0];
  if (!ip || !ipc?.gateway || !inSubnet(ip, n.subnet)) {
    throw new KybernateError('KYB_ERR_RUNTIME', `CNI bridge ADD for sandbox ${name}: no IPv4 address in ${n.subnet} with a gateway in its result ${JSON.stringify(result.ips ?? [])}`);
  }
  return { ip, gateway: ipc.gateway };
}

/** An existing namespace of this name: the sandbox when it is one of network `n`, a refusal otherwise. */
async function existing(name: string, n: ResolvedNetwork): Promise<Sandbox> {
  const s = await findSandbox(name);
  if (s && inSubnet(s.ip, n.subnet)) return s;
  const what = s ? `its address ${s.ip} is outside ${n.subnet}` : `it has no IPv4 address on ${IFNAME} with a default route`;
  throw new KybernateError('KYB_ERR_ALREADY_EXISTS',
    `network namespace ${netnsPath(name)} exists but is not a sandbox of network ${n.name} (${what}): remove it first (removeSandbox, or ip netns del ${name})`);
}

/** Removes the sandbox `name` of network `net` (the one it was created with); nothing to do is no error. */
export async function removeSandbox(name: string, net?: Partial<NetworkConfig>): Promise<void> {
  validateSandboxName(name);
  const n = resolveNetwork(net);
  const plugins = findPlugins(n.pluginDirs, ['bridge', 'host-local']);
  // CNI_NETNS empty: the plugin releases the lease and skips the namespace (spec: DEL must tolerate it).
  const netns = netnsExists(name) ? netnsPath(name) : '';
  await execPlugin(plugins.bridge, call('DEL', name, netns, IFNAME, n), bridgeConfig(n));
  await delNetns(name);
}

/**
 * The sandbox `name`, read from the namespace itself: its eth0 address and default gateway. undefined when
 * there is no such namespace or it is not a complete sandbox (no IPv4 address on eth0, or no default route).
 */
export async function findSandbox(name: string): Promise<Sandbox | undefined> {
  validateSandboxName(name);
  if (!netnsExists(name)) return undefined;
  const [ip, gateway] = await Promise.all([ipv4Of(name, IFNAME), defaultGateway(name)]);
  if (!ip || !gateway) return undefined;
  return { name, netns: netnsPath(name), ip, gateway };
}

/**
 * Deletes the network's bridge once no sandbox is attached to it (the last cleanup of a demo or a test);
 * resolves to whether it was deleted. The IPAM directory stays: host-local keeps its lock file there.
 */
export async function removeNetwork(net?: Partial<NetworkConfig>): Promise<boolean> {
  return deleteIdleBridge(resolveNetwork(net).bridge);
}
