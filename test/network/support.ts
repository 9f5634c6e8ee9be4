// Shared by the network tests: a private network per file (its own bridge, subnet and IPAM directory, so
// nothing collides with the demo's default network or another run), sandbox names unique to this process,
// HTTP from the host, and why the tests cannot run here.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { removeNetwork, removeSandbox, type NetworkConfig } from '../../src/network/sandbox';

export const BUSYBOX = '/bin/busybox';
const CNI_DIRS = ['/opt/cni/bin', '/usr/lib/cni'];

/** Why real namespaces and CNI cannot be used here, if they cannot. */
export function networkMissing(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces and CNI)';
  if (!['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'].some((p) => existsSync(p))) return 'ip (iproute2) not installed';
  if (!CNI_DIRS.some((d) => existsSync(join(d, 'bridge')))) return `no CNI bridge plugin in ${CNI_DIRS.join(', ')} (apt-get install containernetworking-plugins)`;
  if (!existsSync(BUSYBOX)) return `${BUSYBOX} missing (apt-get install busybox-static)`;
  return undefined;
}

/**
 * A network of this file's own: bridge and subnet chosen by `slot` (one per test file, 0-9), IPAM state in a
 * temporary directory. Every sandbox named through `name()` and the bridge are removed after the file.
 */
export function privateNetwork(slot: number): { net: NetworkConfig; name(s: string): string } {
  const dataDir = mkdtempSync(join(tmpdir(), 'kyb-ipam-'));
  const net: NetworkConfig = { name: `kybt${slot}`, bridge: `kybt${slot}`, subnet: `10.88.${240 + slot}.0/24`, dataDir };
  const names: string[] = [];
  afterAll(async () => {
    for (const n of names) await removeSandbox(n, net).catch(() => undefined);
    await removeNetwork(net).catch(() => undefined);
    rmSync(dataDir, { recursive: true, force: true });
  });
  return {
    net,
    name(s: string) {
      const n = `kybt${slot}-${process.pid}-${s}`;
      names.push(n);
      return n;
    },
  };
}

export interface Reply { status: number; body: string }

/** One GET from the host with a short deadline; rejects with the socket error (ECONNREFUSED, …). */
export function get(url: string, timeoutMs = 3_000): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error(`GET ${url}: no answer after ${timeoutMs} ms`), { code: 'ETIMEDOUT' })));
    req.on('error', reject);
  });
}

/** How a GET failed: its error code, or 'answered' when it did not fail. */
export async function getFailure(url: string, timeoutMs = 3_000): Promise<string> {
  try {
    await get(url, timeoutMs);
    return 'answered';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  }
}

/** Polls GET until it answers 200; resolves to the reply. */
export async function getWhenUp(url: string, timeoutMs = 15_000): Promise<Reply> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const r = await get(url, 2_000);
      if (r.status === 200) return r;
      last = new Error(`status ${r.status}: ${r.body}`);
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`GET ${url} did not answer 200 within ${timeoutMs} ms: ${String(last)}`);
}

const servers = new Set<ChildProcess>();
afterAll(() => { for (const c of servers) c.kill('SIGKILL'); });

/** busybox httpd serving `dir` on port 8080 inside sandbox `name` (ip netns exec); killed after the file. */
export function httpdIn(name: string, dir: string): ChildProcess {
  const child = spawn('ip', ['netns', 'exec', name, BUSYBOX, 'httpd', '-f', '-p', '8080', '-h', dir], { stdio: 'ignore' });
  servers.add(child);
  child.once('exit', () => servers.delete(child));
  return child;
}

/** `ip netns list` names. */
export function netnsNames(): string[] {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').map((l) => l.split(' ')[0]).filter(Boolean);
}

const temps: string[] = [];
afterAll(() => { for (const d of temps.splice(0)) rmSync(d, { recursive: true, force: true }); });

/** A fresh temporary directory, removed after the file. */
export function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  temps.push(d);
  return d;
}
