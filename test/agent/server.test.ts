// The agent's doors, without containerd: the root-only unix socket (modes, one agent per socket, a stale
// socket replaced), TCP with mutual TLS (served with a certificate from the CA, refused without one or with
// one from another CA), requests that do not decode or are too big, the configuration's refusals, and the
// CLI when no agent runs.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { beforeAll, describe, expect, it } from 'vitest';
import { AgentClient } from '../../src/agent-api/client';
import { AGENT_SERVICE, KYB_CODE_KEY } from '../../src/agent-api/definition';
import { Status } from '../../src/errors';
import { VERSION } from '../../src/version';
import { agentDir, agentExit, bundle, failure, kybernate, startAgent, tempDir } from './support';

const exec = promisify(execFile);

beforeAll(() => bundle(), 120_000);

/** A raw unary call whose request bytes are given as they are; resolves to its status and trailer code. */
function rawCall(socket: string, method: string, payload: Buffer): Promise<{ code: number; kybCode?: string }> {
  const c = new grpc.Client(`unix://${socket}`, grpc.credentials.createInsecure());
  return new Promise((resolve) => {
    c.makeUnaryRequest(`/${AGENT_SERVICE}/${method}`, (b: Buffer) => b, (b: Buffer) => b, payload, (err) => {
      c.close();
      resolve({ code: err?.code ?? Status.OK, kybCode: err?.metadata?.get(KYB_CODE_KEY)[0] as string | undefined });
    });
  });
}

describe('the unix socket', () => {
  it('is 0600 in a 0700 directory the agent creates; Version and Health answer without containerd', async () => {
    const agent = await startAgent();
    try {
      expect(statSync(agent.socket).mode & 0o777).toBe(0o600);
      expect(statSync(join(agent.dir, 'run')).mode & 0o777).toBe(0o700);
      const c = agent.client();
      expect(await c.version({})).toMatchObject({ version: VERSION });
      expect(await c.health({})).toMatchObject({ containerd: false, workloads: 0 });
      c.close();
    } finally {
      expect(await agent.stop()).toBe(0);
    }
    expect(existsSync(agent.socket), 'a stopped agent removes its socket').toBe(false);
  });

  it('a second agent on the socket refuses while the first lives, and replaces the socket once it died', async () => {
    const first = await startAgent();
    const second = await agentExit({ dir: first.dir });
    expect(second.code).toBe(1);
    expect(second.stderr).toContain(`another kybernate-agent is listening at ${first.socket}`);
    const c = first.client();
    expect((await c.version({})).version).toBe(VERSION);
    c.close();
    await first.kill();
    expect(statSync(first.socket).isSocket(), 'SIGKILL leaves the socket behind').toBe(true);
    const third = await startAgent({ dir: first.dir });
    const c3 = third.client();
    expect((await c3.version({})).version).toBe(VERSION);
    c3.close();
    await third.stop();
  });

  it('a request that does not decode is INTERNAL, one over 4 MiB RESOURCE_EXHAUSTED, and the agent serves on', async () => {
    const agent = await startAgent();
    try {
      // GetRequest.namespace (field 1, bytes) claiming 2^28 bytes that are not there; a field of wire type 7.
      for (const bytes of [[0x0a, 0x80, 0x80, 0x80, 0x80, 0x01], [0x0a, 0x05, 0x61], [0x1f, 0x01]]) {
        const bad = await rawCall(agent.socket, 'Get', Buffer.from(bytes));
        expect([Status.INVALID_ARGUMENT, Status.INTERNAL], bytes.join(' ')).toContain(bad.code);
        expect(bad.kybCode, 'refused before the agent\'s own checks').toBeUndefined();
      }
      const big = await rawCall(agent.socket, 'List', Buffer.alloc(5 * 1024 * 1024, 0));
      expect(big.code).toBe(Status.RESOURCE_EXHAUSTED);
      const c = agent.client();
      expect((await c.version({})).version).toBe(VERSION);
      // An invalid id is the agent's own answer: INVALID_ARGUMENT with its code in the trailer.
      expect(await rawCall(agent.socket, 'Get', Buffer.from([0x0a, 0x03, 0x2e, 0x2e, 0x2f, 0x12, 0x01, 0x78])))
        .toEqual({ code: Status.INVALID_ARGUMENT, kybCode: 'KYB_ERR_INVALID_ARGUMENT' });
      expect(await failure(c.get({ namespace: 'default', id: 'x' }))).toMatchObject({ code: 'KYB_ERR_UNAVAILABLE', status: Status.UNAVAILABLE });
      c.close();
    } finally {
      await agent.stop();
    }
  });
});

const openssl = existsSync('/usr/bin/openssl') ? '/usr/bin/openssl' : undefined;

/** A CA, and a certificate (with key) it signed for `cn`, with `san` as subjectAltName when given. */
async function pki(dir: string, ca: string, certs: Array<{ name: string; cn: string; san?: string }>): Promise<void> {
  const o = (...args: string[]) => exec(openssl!, args, { cwd: dir });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await o('req', '-x509', ...ec, '-keyout', `${ca}.key`, '-out', `${ca}.crt`, '-days', '1', '-subj', `/CN=${ca}`);
  for (const c of certs) {
    await o('req', ...ec, '-keyout', `${c.name}.key`, '-out', `${c.name}.csr`, '-subj', `/CN=${c.cn}`);
    writeFileSync(join(dir, `${c.name}.ext`), c.san ? `subjectAltName=${c.san}\n` : 'basicConstraints=CA:FALSE\n');
    await o('x509', '-req', '-in', `${c.name}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`, '-CAcreateserial',
      '-out', `${c.name}.crt`, '-days', '1', '-extfile', `${c.name}.ext`);
  }
}

describe.skipIf(!openssl)(`TCP with mutual TLS${openssl ? '' : ' (skipped: needs /usr/bin/openssl)'}`, () => {
  it('serves a client with a certificate from the CA; refuses one without a certificate or with another CA\'s', async () => {
    const pkiDir = tempDir('pki');
    await pki(pkiDir, 'ca', [{ name: 'server', cn: 'localhost', san: 'IP:127.0.0.1,DNS:localhost' }, { name: 'client', cn: 'kyb-client' }]);
    await pki(pkiDir, 'other-ca', [{ name: 'intruder', cn: 'kyb-client' }]);
    const f = (n: string) => join(pkiDir, n);
    const agent = await startAgent({ args: ['--tcp', '127.0.0.1:0', '--tls-ca', f('ca.crt'), '--tls-cert', f('server.crt'), '--tls-key', f('server.key')] });
    try {
      expect(agent.tcp).toMatch(/^127\.0\.0\.1:[1-9][0-9]*$/);
      const ca = readFileSync(f('ca.crt'));
      const good = new AgentClient({ address: agent.tcp!, tls: { ca, cert: readFileSync(f('client.crt')), key: readFileSync(f('client.key')), serverName: 'localhost' } });
      expect((await good.version({})).version).toBe(VERSION);
      good.close();
      const none = new AgentClient({ address: agent.tcp!, tls: { ca, serverName: 'localhost' } });
      expect(await failure(none.version({}, { timeoutMs: 10_000 }))).toMatchObject({ code: 'KYB_ERR_UNAVAILABLE', status: Status.UNAVAILABLE });
      none.close();
      const other = new AgentClient({ address: agent.tcp!, tls: { ca, cert: readFileSync(f('intruder.crt')), key: readFileSync(f('intruder.key')), serverName: 'localhost' } });
      expect(await failure(other.version({}, { timeoutMs: 10_000 }))).toMatchObject({ code: 'KYB_ERR_UNAVAILABLE', status: Status.UNAVAILABLE });
      other.close();
      // The unix socket is served alongside.
      const local = agent.client();
      expect((await local.version({})).version).toBe(VERSION);
      local.close();
    } finally {
      await agent.stop();
    }
  });
});

describe('configuration', () => {
  it('refuses TCP without mutual TLS and metrics off loopback (exit 2, with the reason and the usage)', async () => {
    const tcp = await agentExit({ args: ['--tcp', '127.0.0.1:0'] });
    expect(tcp.code).toBe(2);
    expect(tcp.stderr).toContain('--tcp is mutual TLS only: give --tls-ca');
    expect(tcp.stderr).toContain('usage: kybernate-agent');
    const metrics = await agentExit({ args: ['--metrics', '0.0.0.0:9464'] });
    expect(metrics.code).toBe(2);
    expect(metrics.stderr).toContain('only on a loopback address');
  });

  it('reads the config file (comments and every key), and flags override it', async () => {
    const dir = agentDir();
    const example = JSON.parse(readFileSync(join(__dirname, '..', '..', 'shim-config', 'kybernate-agent.json'), 'utf8')) as Record<string, string>;
    writeFileSync(join(dir, 'config.json'), JSON.stringify({
      ...example, socket: join(dir, 'from-file', 'agent.sock'), 'log-level': 'debug', metrics: 'off',
    }));
    // The command line gives --socket and --metrics (agentArgs), not --log-level: the file's level applies.
    const agent = await startAgent({ dir });
    try {
      expect(agent.socket).toBe(join(dir, 'run', 'agent.sock'));
      expect(agent.metrics).toMatch(/^127\.0\.0\.1:\d+$/);
      expect(agent.logs()).toMatch(/"logLevel":"debug".*"msg":"listening"/);
    } finally {
      await agent.stop();
    }
    const unknown = join(dir, 'bad.json');
    writeFileSync(unknown, JSON.stringify({ sockett: '/x' }));
    const r = await agentExit({ args: ['--config', unknown] });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('unknown key "sockett"');
  });
});

describe('the CLI without an agent', () => {
  it('exits 3 and says how to start it (ps, and suspend given --agent)', async () => {
    const sock = join(tempDir('no-agent'), 'agent.sock');
    const want = `the kybernate agent is not running (no socket at ${sock}): start it with \`kybernate-agent\` or \`systemctl start kybernate-agent\``;
    const ps = await kybernate(['ps', '--agent', sock]);
    expect(ps).toEqual({ code: 3, stdout: '', stderr: `kybernate: ${want}\n` });
    const env = await kybernate(['ps', '--json'], { KYBERNATE_AGENT: sock });
    expect(env.code).toBe(3);
    expect(JSON.parse(env.stdout)).toMatchObject({ ok: false, code: 'KYB_ERR_UNAVAILABLE', status: Status.UNAVAILABLE, error: want });
    const s = await kybernate(['suspend', 'web', '--agent', sock]);
    expect(s.code).toBe(3);
    expect(s.stderr).toBe(`kybernate: ${want}\n`);
    expect((await kybernate(['suspend', 'web', '--agent', sock, '--state-dir', '/run/containerd'])).code).toBe(2);
  });
});
