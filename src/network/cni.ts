// CNI plugins run directly, as the CNI spec has a runtime do it: the command and the sandbox in CNI_*
// environment variables, the network configuration as JSON on stdin, the result as JSON on stdout, and on
// failure (non-zero exit) an error object {code, msg, details} on stdout, which becomes a KybernateError
// carrying the plugin's own words.
//
// Invariants: plugins are found only in the configured directories (never through PATH), and CNI_PATH is
// those directories, so a delegated IPAM plugin comes from the same place; the plugin's environment is the
// CNI variables and PATH only (the bridge plugin may run iptables); every call has a deadline.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { KybernateError } from '../errors';
import { run } from '../native/run';
import type { ResolvedNetwork } from './config';

const CNI_VERSION = '1.0.0';
const PLUGIN_TIMEOUT_MS = 30_000;
const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export type PluginName = 'loopback' | 'bridge' | 'host-local';
export type Plugins = Record<PluginName, string>;

/**
 * The first executable of each plugin in `dirs`, in order. FAILED_PRECONDITION naming every directory
 * looked in (and whether it exists) when one is missing: nothing has been changed by then.
 */
export function findPlugins(dirs: string[], names: PluginName[] = ['loopback', 'bridge', 'host-local']): Plugins {
  const found: Partial<Plugins> = {};
  const missing: string[] = [];
  for (const name of names) {
    const p = dirs.map((d) => path.join(d, name)).find((f) => isExecutable(f));
    if (p) found[name] = p;
    else missing.push(name);
  }
  if (missing.length > 0) {
    const where = dirs.map((d) => (fs.existsSync(d) ? d : `${d} (no such directory)`)).join(', ');
    throw new KybernateError('KYB_ERR_FAILED_PRECONDITION',
      `CNI plugin${missing.length > 1 ? 's' : ''} ${missing.join(', ')} not found in ${where}: install containernetworking-plugins `
      + '(apt-get install containernetworking-plugins, or `make setup`) or name the directory that holds them');
  }
  return found as Plugins;
}

function isExecutable(f: string): boolean {
  try {
    fs.accessSync(f, fs.constants.X_OK);
    return fs.statSync(f).isFile();
  } catch {
    return false;
  }
}

/** The loopback plugin's configuration: brings `lo` up in the sandbox. */
export function loopbackConfig(net: ResolvedNetwork): object {
  return { cniVersion: CNI_VERSION, name: net.name, type: 'loopback' };
}

/**
 * The bridge plugin's configuration: a veth from the sandbox to `net.bridge`, which holds the subnet's
 * first address as the gateway (so the host reaches sandboxes directly, without NAT); host-local hands out
 * the addresses and a default route through the gateway.
 */
export function bridgeConfig(net: ResolvedNetwork): object {
  return {
    cniVersion: CNI_VERSION,
    name: net.name,
    type: 'bridge',
    bridge: net.bridge,
    isGateway: true,
    ipMasq: false,
    ipam: {
      type: 'host-local',
      ranges: [[{ subnet: net.subnet }]],
      routes: [{ dst: '0.0.0.0/0' }],
      dataDir: net.dataDir,
    },
  };
}

export interface CniCall {
  command: 'ADD' | 'DEL';
  /** CNI_CONTAINERID: the sandbox name. */
  containerId: string;
  /** CNI_NETNS: the namespace's path; '' for a DEL whose namespace is gone already. */
  netns: string;
  ifname: string;
  /** CNI_PATH. */
  pluginDirs: string[];
}

/** The parts of a CNI result this module reads. */
export interface CniResult { ips?: Array<{ address?: string; gateway?: string }> }

/** Runs `plugin` for `call` with `config` on stdin; resolves to its result (DEL: {}), rejects with its error. */
export async function execPlugin(plugin: string, call: CniCall, config: object): Promise<CniResult> {
  const env = {
    CNI_COMMAND: call.command,
    CNI_CONTAINERID: call.containerId,
    CNI_NETNS: call.netns,
    CNI_IFNAME: call.ifname,
    CNI_PATH: call.pluginDirs.join(':'),
    PATH: process.env.PATH || SYSTEM_PATH,
  };
  const what = `CNI ${path.basename(plugin)} ${call.command} for sandbox ${call.containerId}`;
  let r;
  try {
    r = await run(plugin, [], { env, input: JSON.stringify(config), timeoutMs: PLUGIN_TIMEOUT_MS });
  } catch (err) {
    throw new KybernateError('KYB_ERR_RUNTIME', `${what}: cannot run ${plugin}: ${(err as Error).message}`, { cause: err });
  }
  const stdout = r.stdout.toString('utf8').trim();
  if (r.timedOut) throw new KybernateError('KYB_ERR_DEADLINE', `${what}: no answer after ${PLUGIN_TIMEOUT_MS} ms`);
  if (r.status !== 0) throw pluginError(what, r.status, stdout, r.stderr.toString('utf8').trim());
  if (stdout === '') return {};
  try {
    return JSON.parse(stdout) as CniResult;
  } catch {
    throw new KybernateError('KYB_ERR_RUNTIME', `${what}: the plugin's result is not JSON: ${stdout.slice(0, 200)}`);
  }
}

/** The spec's error object, worded; a plugin that printed something else is quoted as it is. */
function pluginError(what: string, status: number, stdout: string, stderr: string): KybernateError {
  let e: { code?: unknown; msg?: unknown; details?: unknown } = {};
  try {
    e = JSON.parse(stdout) as typeof e;
  } catch {
    // not the spec's error object
  }
  if (typeof e.msg === 'string') {
    const details = typeof e.details === 'string' && e.details !== '' ? `: ${e.details}` : '';
    // Code 11 is the spec's "try again later".
    return new KybernateError(e.code === 11 ? 'KYB_ERR_UNAVAILABLE' : 'KYB_ERR_RUNTIME',
      `${what}: ${e.msg}${details} (CNI error ${String(e.code)})`);
  }
  const text = (stdout || stderr).split('\n').slice(-3).join(' ').trim();
  return new KybernateError('KYB_ERR_RUNTIME', `${what}: exited with status ${status}${text ? `: ${text}` : ''}`);
}
