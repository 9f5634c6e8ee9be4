// Network sandboxes (src/network) with real namespaces and the CNI plugins, as root: two sandboxes on one
// bridge, a server inside one reachable from the host and from the other sandbox, create idempotent per
// name, remove cleaning up namespace and lease (and idempotent), refusals of bad names, a missing plugin
// directory named in the error, rollback of a failed creation, and a foreign namespace left alone.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createSandbox, findSandbox, removeNetwork, removeSandbox } from '../../src/network/sandbox';
import { BUSYBOX, getFailure, getWhenUp, httpdIn, netnsNames, networkMissing, privateNetwork, tempDir } from './support';

const missing = networkMissing();

/** The addresses host-local has leased on `net` (its files named after them). */
const leases = (dataDir: string, network: string): string[] => {
  const dir = join(dataDir, network);
  return existsSync(dir) ? readdirSync(dir).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f)).sort() : [];
};

describe.skipIf(missing !== undefined)(`network sandboxes${missing ? ` (${missing})` : ''}`, () => {
  const p = privateNetwork(1);
  const { net } = p;

  it('two sandboxes: each its own namespace and address, a server in one reachable from the host and the other', async () => {
    const a = await createSandbox(p.name('a'), net);
    const b = await createSandbox(p.name('b'), net);
    expect(a).toEqual({ name: a.name, netns: `/run/netns/${a.name}`, ip: expect.stringMatching(/^10\.88\.241\.\d+$/), gateway: '10.88.241.1' });
    expect(b.ip).not.toBe(a.ip);
    expect(b.gateway).toBe(a.gateway);
    expect(netnsNames()).toEqual(expect.arrayContaining([a.name, b.name]));
    expect(leases(net.dataDir!, net.name).sort()).toEqual([a.ip, b.ip].sort());
    expect(await findSandbox(a.name)).toEqual(a);
    // Same name again: the same sandbox, nothing new leased.
    expect(await createSandbox(a.name, net)).toEqual(a);
    expect(leases(net.dataDir!, net.name)).toHaveLength(2);

    const www = tempDir('kyb-www-');
    writeFileSync(join(www, 'index.html'), `hello from ${a.name}\n`);
    httpdIn(a.name, www);
    expect(await getWhenUp(`http://${a.ip}:8080/`)).toEqual({ status: 200, body: `hello from ${a.name}\n` });
    // Only inside a: the host's own loopback has no such server, and b's address none either.
    expect(await getFailure(`http://${b.ip}:8080/`)).toBe('ECONNREFUSED');
    const fromB = execFileSync('ip', ['netns', 'exec', b.name, BUSYBOX, 'wget', '-q', '-O', '-', `http://${a.ip}:8080/`], { encoding: 'utf8', timeout: 10_000 });
    expect(fromB).toBe(`hello from ${a.name}\n`);
  });

  it('remove: namespace and lease gone, a second remove is no error, the name can be used again', async () => {
    const name = p.name('rm');
    const s = await createSandbox(name, net);
    expect(leases(net.dataDir!, net.name)).toContain(s.ip);
    await removeSandbox(name, net);
    expect(existsSync(s.netns)).toBe(false);
    expect(netnsNames()).not.toContain(name);
    expect(leases(net.dataDir!, net.name)).not.toContain(s.ip);
    expect(await findSandbox(name)).toBeUndefined();
    await removeSandbox(name, net);
    const again = await createSandbox(name, net);
    expect(again.name).toBe(name);
    // A crash between `ip netns del` and the lease's release: the next creation releases the stale lease.
    execFileSync('ip', ['netns', 'del', name]);
    expect(leases(net.dataDir!, net.name)).toContain(again.ip);
    const third = await createSandbox(name, net);
    expect(leases(net.dataDir!, net.name).filter((ip) => ip === third.ip || ip === again.ip)).toEqual([third.ip]);
    await removeSandbox(name, net);
  });

  it('refuses bad names before touching anything', async () => {
    for (const bad of ['', 'A', '-a', 'a_b', '../x', 'a/b', 'a.b', 'a'.repeat(64), 'ä']) {
      const before = netnsNames();
      await expect(createSandbox(bad, net)).rejects.toMatchObject({ code: 'KYB_ERR_INVALID_ARGUMENT', message: expect.stringContaining('invalid sandbox name') });
      await expect(removeSandbox(bad, net)).rejects.toMatchObject({ code: 'KYB_ERR_INVALID_ARGUMENT' });
      await expect(findSandbox(bad)).rejects.toMatchObject({ code: 'KYB_ERR_INVALID_ARGUMENT' });
      expect(netnsNames()).toEqual(before);
    }
    await expect(createSandbox('ok', { ...net, bridge: 'a-bridge-name-too-long' })).rejects.toMatchObject({ code: 'KYB_ERR_INVALID_ARGUMENT', message: expect.stringContaining('bridge') });
    await expect(createSandbox('ok', { ...net, subnet: '10.88.241.7/24' })).rejects.toMatchObject({ message: expect.stringContaining('host bits') });
    await expect(createSandbox('ok', { ...net, dataDir: 'relative' })).rejects.toMatchObject({ code: 'KYB_ERR_INVALID_ARGUMENT' });
  });

  it('a missing plugin directory: a clear error naming where it looked, nothing created', async () => {
    const name = p.name('noplug');
    const empty = tempDir('kyb-cni-empty-');
    const err = await createSandbox(name, { ...net, pluginDirs: ['/nonexistent/cni', empty] }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'KYB_ERR_FAILED_PRECONDITION' });
    expect((err as Error).message).toContain('/nonexistent/cni (no such directory)');
    expect((err as Error).message).toContain(empty);
    expect((err as Error).message).toMatch(/loopback, bridge, host-local not found/);
    expect(netnsNames()).not.toContain(name);
  });

  it('a failed creation rolls back: no namespace, no lease, no veth; the plugin\'s message comes through', async () => {
    // A /30 has one address for a sandbox besides the gateway: the second creation fails inside host-local.
    const small = { ...net, name: 'kybt1s', bridge: 'kybt1s', subnet: '10.88.251.0/30' };
    const first = p.name('s1');
    const second = p.name('s2');
    try {
      const s = await createSandbox(first, small);
      const links = execFileSync('ip', ['-o', 'link', 'show', 'master', 'kybt1s'], { encoding: 'utf8' }).trim().split('\n');
      const err = await createSandbox(second, small).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'KYB_ERR_RUNTIME', message: expect.stringMatching(/CNI bridge ADD for sandbox .*s2: .*no IP addresses available/) });
      expect(netnsNames()).not.toContain(second);
      expect(leases(small.dataDir!, small.name)).toEqual([s.ip]);
      expect(execFileSync('ip', ['-o', 'link', 'show', 'master', 'kybt1s'], { encoding: 'utf8' }).trim().split('\n')).toEqual(links);
    } finally {
      await removeSandbox(first, small);
      await removeSandbox(second, small);
      expect(await removeNetwork(small)).toBe(true);
    }
  });

  it('a namespace that is not a sandbox of this network is refused and left as it is', async () => {
    const name = p.name('foreign');
    execFileSync('ip', ['netns', 'add', name]);
    try {
      await expect(createSandbox(name, net)).rejects.toMatchObject({ code: 'KYB_ERR_ALREADY_EXISTS', message: expect.stringContaining(`/run/netns/${name} exists but is not a sandbox`) });
      expect(netnsNames()).toContain(name);
      expect(await findSandbox(name)).toBeUndefined();
    } finally {
      execFileSync('ip', ['netns', 'del', name]);
    }
    // A sandbox of another subnet is no sandbox of this one either.
    const other = { ...net, name: 'kybt1o', bridge: 'kybt1o', subnet: '10.88.252.0/24' };
    const o = await createSandbox(p.name('other'), other);
    try {
      await expect(createSandbox(o.name, net)).rejects.toMatchObject({ code: 'KYB_ERR_ALREADY_EXISTS', message: expect.stringContaining('outside 10.88.241.0/24') });
      expect(await findSandbox(o.name)).toEqual(o);
    } finally {
      await removeSandbox(o.name, other);
      await removeNetwork(other);
    }
  });

  it('the bridge goes once no sandbox uses it', async () => {
    const solo = { ...net, name: 'kybt1b', bridge: 'kybt1b', subnet: '10.88.253.0/24' };
    const s = await createSandbox(p.name('bridge'), solo);
    expect(await removeNetwork(solo)).toBe(false);
    await removeSandbox(s.name, solo);
    expect(await removeNetwork(solo)).toBe(true);
    expect(await removeNetwork(solo)).toBe(false);
    mkdirSync(solo.dataDir!, { recursive: true });
  });
});
