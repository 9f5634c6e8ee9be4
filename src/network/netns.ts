// Named network namespaces through iproute2: `ip netns add NAME` bind-mounts a fresh namespace at
// /run/netns/NAME, which outlives every process in it until `ip netns del NAME`; `ip -n NAME -j ...` reads
// what is configured inside. Names are validated by the caller (config.ts) before they get here.
import * as fs from 'node:fs';
import { KybernateError } from '../errors';
import { which } from '../host/versions';
import { run } from '../native/run';

export const NETNS_DIR = '/run/netns';
const IP_TIMEOUT_MS = 15_000;

export const netnsPath = (name: string): string => `${NETNS_DIR}/${name}`;

/** True when /run/netns/<name> exists (a namespace `ip netns add` made, or someone's leftover file). */
export function netnsExists(name: string): boolean {
  return fs.existsSync(netnsPath(name));
}

function ipBinary(): string {
  const ip = which('ip');
  if (!ip) throw new KybernateError('KYB_ERR_FAILED_PRECONDITION', 'ip (iproute2) not found on PATH or in the sbin directories: apt-get install iproute2');
  return ip;
}

/** Runs `ip args`; resolves to stdout, rejects with ip's own message. */
async function ip(args: string[]): Promise<string> {
  const r = await run(ipBinary(), args, { timeoutMs: IP_TIMEOUT_MS });
  if (r.status !== 0 || r.timedOut) {
    const text = r.stderr.toString('utf8').trim() || `exited with status ${r.status}`;
    const code = /File exists/.test(text) ? 'KYB_ERR_ALREADY_EXISTS' : 'KYB_ERR_RUNTIME';
    throw new KybernateError(code, `ip ${args.join(' ')}: ${r.timedOut ? `timed out after ${IP_TIMEOUT_MS} ms` : text}`);
  }
  return r.stdout.toString('utf8');
}

/** Creates the namespace; KYB_ERR_ALREADY_EXISTS (and nothing changed) when the name is taken. */
export async function addNetns(name: string): Promise<void> {
  await ip(['netns', 'add', name]);
}

/** Removes the namespace's name; processes still in it keep it alive, unnamed. Idempotent. */
export async function delNetns(name: string): Promise<void> {
  if (!netnsExists(name)) return;
  try {
    await ip(['netns', 'del', name]);
  } catch (err) {
    if (netnsExists(name)) throw err; // gone meanwhile: someone else removed it
  }
}

interface IpAddr { ifname?: string; addr_info?: Array<{ family?: string; local?: string; prefixlen?: number }> }
interface IpRoute { dst?: string; gateway?: string; dev?: string }

/** The first IPv4 address of `ifname` inside the namespace; undefined when it has none (or no such link). */
export async function ipv4Of(name: string, ifname: string): Promise<string | undefined> {
  let out: string;
  try {
    out = await ip(['-n', name, '-j', '-4', 'addr', 'show', 'dev', ifname]);
  } catch {
    return undefined; // `Device "eth0" does not exist.`
  }
  const links = JSON.parse(out || '[]') as IpAddr[];
  return links.flatMap((l) => l.addr_info ?? []).find((a) => a.family === 'inet' && a.local)?.local;
}

/** The gateway of the namespace's IPv4 default route, if it has one. */
export async function defaultGateway(name: string): Promise<string | undefined> {
  const out = await ip(['-n', name, '-j', '-4', 'route', 'show', 'default']).catch(() => '[]');
  return (JSON.parse(out || '[]') as IpRoute[]).find((r) => r.gateway)?.gateway;
}

/** Deletes host link `link` when it exists and nothing is attached to it (a bridge with no ports left). */
export async function deleteIdleBridge(link: string): Promise<boolean> {
  const shown = await ip(['-j', 'link', 'show', 'dev', link]).catch(() => undefined);
  if (shown === undefined) return false;
  const ports = JSON.parse((await ip(['-j', 'link', 'show', 'master', link])) || '[]') as unknown[];
  if (ports.length > 0) return false;
  await ip(['link', 'del', 'dev', link]);
  return true;
}
