// Scale to zero and wake on request, end to end: containerd 2.1, the kybernate shim, CRIU, the node agent and
// the activator, with a busybox httpd workload in its own network namespace (CNI bridge), put to sleep by
// checkpoint with exit (its process gone) when idle and restored by the next request, which is answered by
// the same boot of the server (its listening socket came back with it). One containerd version: the
// activator only talks to the agent, whose containerd matrix is covered by test/agent/*.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, truncateSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSandbox, removeSandbox, type Sandbox } from '../../src/network/sandbox';
import { checkpointDaemonOptions, criuMissing, removeDaemonRuntimeDirs } from '../e2e/support/checkpoint';
import { removeContainer, runDetached, task, waitFor } from '../e2e/support/ctr';
import { SHIM_RUNTIME, missingReason, startContainerd, type Containerd } from '../e2e/support/harness';
import { kybernate, startAgent, type Agent } from '../agent/support';
import { HTTPD, get, splitHostPort, startActivator, waitRouteState, type Activator, type RouteSpec } from './support';

const lacks = missingReason('2.1') ?? criuMissing() ?? (existsSync('/usr/lib/cni/bridge') ? undefined : 'no CNI bridge plugin (containernetworking-plugins)');
const suite = lacks ? describe.skip : describe;

suite(`activator wakes a checkpointed workload${lacks ? ` (skipped: ${lacks})` : ''}`, () => {
  let cd: Containerd;
  let agent: Agent;
  let sandbox: Sandbox;
  let upstream: string;
  const id = `web-${process.pid}`; // runc's state of a killed run's container may still be there
  let ns: string;
  const route = (o: Partial<RouteSpec> = {}): RouteSpec => ({
    name: 'web', workload: { namespace: ns, id }, upstream,
    sleep: { kind: 'checkpoint', idleMs: 1000, minRunMs: 0, graceMs: 100 }, probe: { http: '/', intervalMs: 10 }, ...o,
  });

  beforeAll(async () => {
    cd = await startContainerd('2.1', checkpointDaemonOptions());
    ns = cd.namespace;
    agent = await startAgent({ cd });
    sandbox = await createSandbox(`kyb-act-${process.pid % 100000}`);
    upstream = `${sandbox.ip}:8080`;
    await runDetached(cd, SHIM_RUNTIME, id, HTTPD, ['--with-ns', `network:${sandbox.netns}`]);
    await waitFor('httpd to answer', async () => (await get(upstream, '/').catch(() => undefined))?.status === 200);
  });
  afterAll(async () => {
    await agent?.stop();
    if (cd) await removeContainer(cd, id);
    await cd?.stop();
    if (sandbox) await removeSandbox(sandbox.name);
    removeDaemonRuntimeDirs();
  });

  let activator: Activator;
  afterAll(async () => { await activator?.stop(); });

  it('idle → checkpointed (process gone); a request wakes it, answered by the same boot, with the wake header', async () => {
    const before = await get(upstream, '/cgi-bin/echo?first');
    const boot = before.body.split(' ')[0];
    activator = await startActivator({ agent: agent.socket, routes: [route()], metrics: true });
    const through = await get(activator.listen, '/cgi-bin/echo?through');
    expect(through).toMatchObject({ status: 200, body: `${boot} through\n` });
    expect(through.headers['x-kybernate-wake-ms']).toBeUndefined();

    const asleep = await waitRouteState(activator, 'web', 'asleep');
    expect(asleep.lastSleep).toMatchObject({ kind: 'checkpoint', ok: true });
    expect(await task(cd, id)).toBeUndefined(); // scale to zero: no task, no process
    const ps = JSON.parse((await kybernate(['ps', '--json', '-n', ns, '--agent', agent.socket])).stdout) as { workloads: Array<{ id: string; state: string }> };
    expect(ps.workloads.find((w) => w.id === id)?.state).toBe('CHECKPOINTED');

    const woke = await get(activator.listen, '/cgi-bin/echo?woke');
    expect(woke).toMatchObject({ status: 200, body: `${boot} woke\n` });
    expect(Number(woke.headers['x-kybernate-wake-ms'])).toBeGreaterThan(0);
    const r = await activator.route('web');
    expect(r.state).toBe('awake');
    expect(r.lastWake).toMatchObject({ from: 'checkpoint', ok: true, held: 1 });
    expect(r.lastWake!.steps.map((s) => s.name)).toEqual(expect.arrayContaining(['agent-get', 'restore', 'probe']));
    expect((await task(cd, id))?.status).toBe('RUNNING');

    const metrics = await (await fetch(`http://${activator.metrics}/metrics`)).text();
    expect(metrics).toMatch(/kybernate_activator_wakes_total\{route="web",from="checkpoint",result="ok"\} 1/);
    expect(metrics).toMatch(/kybernate_activator_sleeps_total\{route="web",kind="checkpoint",result="ok"\} 1/);
    expect(metrics).toMatch(/kybernate_activator_requests_total\{route="web",outcome="ok"\} 2/);

    const st = await kybernate(['activator', 'status', '--admin', activator.admin]);
    expect(st.code).toBe(0);
    expect(st.stdout).toMatch(/web\s+\*\/\s+\S+\/web-\d+\s+\S+:8080\s+checkpoint\s+(awake|draining|sleeping|asleep)/);
  });

  it('200 concurrent requests during a wake: all answered correctly, in order per connection', async () => {
    await waitRouteState(activator, 'web', 'asleep');
    const boot = (await get(activator.listen, '/cgi-bin/echo?x')).body.split(' ')[0];
    await waitRouteState(activator, 'web', 'asleep');
    // 20 keep-alive connections, 10 requests each, one after another on each connection.
    const [host, port] = splitHostPort(activator.listen);
    const results = await Promise.all(Array.from({ length: 20 }, async (_, c) => {
      const agentC = new http.Agent({ keepAlive: true, maxSockets: 1 });
      const bodies: string[] = [];
      for (let i = 0; i < 10; i++) bodies.push((await get(`${host}:${port}`, `/cgi-bin/echo?c${c}-${i}`, { agent: agentC })).body);
      agentC.destroy();
      return bodies;
    }));
    results.forEach((bodies, c) => expect(bodies).toEqual(Array.from({ length: 10 }, (_, i) => `${boot} c${c}-${i}\n`)));
    const r = await activator.route('web');
    expect(r.lastWake?.ok).toBe(true);
    expect(r.lastWake!.held).toBeGreaterThanOrEqual(1);
  });

  it('the activator restarted while the workload sleeps still wakes it', async () => {
    await waitRouteState(activator, 'web', 'asleep');
    await activator.kill();
    activator = await startActivator({ agent: agent.socket, routes: [route()] });
    await waitRouteState(activator, 'web', 'asleep'); // learnt from the agent, not from memory
    const woke = await get(activator.listen, '/');
    expect(woke).toMatchObject({ status: 200, body: 'hello\n' });
    expect(Number(woke.headers['x-kybernate-wake-ms'])).toBeGreaterThan(0);
  });

  it('routes reload without a restart; a wrong file leaves them as they were', async () => {
    activator.setRoutes([route({ sleep: { kind: 'never' } }), route({ name: 'other', host: 'other.test', upstream: '127.0.0.1:9' })]);
    await waitFor('the new routes', async () => (await activator.status()).routes.length === 2);
    writeFileSync(activator.config, '{ "routes": [');
    await waitFor('the reload error in the log', () => activator.logs().includes('routes not reloaded'));
    expect((await activator.status()).routes.map((r) => r.name).sort()).toEqual(['other', 'web']);
    const none = await get(activator.listen, '/', { host: 'nobody.test' });
    expect(none.status).toBe(200); // '*' route still there
    activator.setRoutes([route()]);
    await waitFor('one route again', async () => (await activator.status()).routes.length === 1);
  });

  it('put to sleep behind its back: a failed request makes it ask the agent, and the next request wakes it', async () => {
    activator.setRoutes([route({ sleep: { kind: 'never' } })]);
    await waitFor('the never-sleeping route', async () => (await activator.route('web')).sleepKind === 'never');
    expect((await get(activator.listen, '/')).status).toBe(200);
    expect((await kybernate(['checkpoint', id, '--exit', '-n', ns, '--agent', agent.socket])).code).toBe(0);
    // The activator still thinks it awake: this request finds nobody (CRIU's network lock drops the SYN).
    const lost = await get(activator.listen, '/');
    expect([502, 504]).toContain(lost.status);
    await waitRouteState(activator, 'web', 'asleep');
    const woke = await get(activator.listen, '/');
    expect(woke).toMatchObject({ status: 200, body: 'hello\n' });
    expect(Number(woke.headers['x-kybernate-wake-ms'])).toBeGreaterThan(0);
  });

  it('queue full → 503 + Retry-After; the held requests are answered once the probe passes', async () => {
    // Awake and kept so, the readiness flag removed: the snapshot it is put to sleep into has none, so the
    // next wake stops at its probe until the test creates the flag in the restored container.
    activator.setRoutes([route({ sleep: { kind: 'never' } })]);
    await waitFor('the never-sleeping route', async () => (await activator.route('web')).sleepKind === 'never');
    expect((await get(activator.listen, '/')).status).toBe(200);
    await cd.ctrOk(['tasks', 'exec', '--exec-id', 'unready', id, 'rm', '/tmp/ready']);
    activator.setRoutes([route({ probe: { http: '/cgi-bin/ready', intervalMs: 20 }, limits: { queue: 5 } })]);
    await waitRouteState(activator, 'web', 'asleep', 60_000);
    const held = Array.from({ length: 5 }, (_, i) => get(activator.listen, `/cgi-bin/echo?held${i}`));
    await waitFor('5 held requests', async () => (await activator.route('web')).held === 5);
    const over = await Promise.all(Array.from({ length: 3 }, () => get(activator.listen, '/cgi-bin/echo?over')));
    for (const o of over) {
      expect(o.status).toBe(503);
      expect(o.headers['retry-after']).toBe('1');
      expect(o.body).toMatch(/too many requests are waiting for workload \S+\/web-\d+ to wake \(limit 5\)/);
    }
    await waitFor('the restored task', async () => (await task(cd, id))?.status === 'RUNNING');
    await cd.ctrOk(['tasks', 'exec', '--exec-id', 'ready', id, 'touch', '/tmp/ready']);
    const answers = await Promise.all(held);
    answers.forEach((a, i) => expect(a.body).toMatch(new RegExp(` held${i}\\n$`)));
    expect((await activator.route('web')).lastWake).toMatchObject({ ok: true, held: 5 });
  });

  it('the agent down: a clear 503, the workload not marked failed; back up, the next request wakes it', async () => {
    activator.setRoutes([route()]);
    await waitRouteState(activator, 'web', 'asleep', 60_000);
    await agent.stop();
    const r = await get(activator.listen, '/');
    expect(r.status).toBe(503);
    expect(r.body).toMatch(/^the kybernate agent is unreachable: .*not running/);
    expect((await activator.route('web')).state).not.toBe('failed');
    agent = await startAgent({ cd, dir: agent.dir });
    const woke = await get(activator.listen, '/');
    expect(woke).toMatchObject({ status: 200, body: 'hello\n' });
  });

  it('a snapshot that cannot be restored: 503 with the reason, the workload marked failed', async () => {
    activator.setRoutes([route({ failAfter: 3 })]);
    await waitRouteState(activator, 'web', 'asleep', 60_000);
    // Corrupt every CRIU image of the newest snapshot in place (the agent's snapshot directory).
    const snaps = join(agent.dir, 'snapshots');
    const images = execFileSync('find', [snaps, '-name', 'pages-*.img'], { encoding: 'utf8' }).trim().split('\n').filter(Boolean);
    expect(images.length).toBeGreaterThan(0);
    for (const f of images) truncateSync(f, 1);
    const r1 = await get(activator.listen, '/');
    expect(r1.status).toBe(503);
    expect(r1.headers['retry-after']).toBeDefined();
    expect(r1.body).toMatch(/failed to wake: .+/);
    const st = await activator.route('web');
    expect(st.state).toBe('failed');
    expect(st.reason).toBeTruthy();
    // Refused at once from now on, without another wake.
    const wakes = st.lastWake!.at;
    const r2 = await get(activator.listen, '/');
    expect(r2.status).toBe(503);
    expect((await activator.route('web')).lastWake!.at).toBe(wakes);
    expect(readdirSync(snaps).length).toBeGreaterThan(0);
  });
});
