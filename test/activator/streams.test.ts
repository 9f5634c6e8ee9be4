// What keeps a workload awake, and the suspend kind of sleep: an SSE stream and a WebSocket pass through the
// activator while the workload runs and hold off its sleep for as long as they are open; a CUDA workload on
// the fake libcuda (CI has no GPU: test/native/fixtures/fake-libcuda.c, as in test/agent/operations.test.ts)
// is suspended when idle (GPU state to host memory, frozen) and resumed by the next request. The workloads
// are real containers under the kybernate shim on containerd 2.1; their HTTP side is a server on the host
// (the gate decides by the workload's state, the proxy only needs an upstream).
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { kybernate as pb } from '../../src/gen/proto';
import { LOOP, removeContainer, runDetached, task, waitFor } from '../e2e/support/ctr';
import { SHIM_RUNTIME, missingReason, startContainerd, type Containerd } from '../e2e/support/harness';
import { criuMissing } from '../e2e/support/checkpoint';
import { daemonOptions, hostSleepMissing, prepare, startCuda } from '../e2e/support/operations';
import { startAgent, type Agent } from '../agent/support';
import { get, startActivator, waitRouteState, type Activator, type RouteSpec } from './support';

const S = pb.agent.v1.WorkloadState;
const lacks = missingReason('2.1') ?? criuMissing() ?? hostSleepMissing() ?? prepare();
const suite = lacks ? describe.skip : describe;

suite(`activator streams and suspend${lacks ? ` (skipped: ${lacks})` : ''}`, () => {
  let cd: Containerd;
  let agent: Agent;
  let server: http.Server;
  let wss: WebSocketServer;
  let upstream: string;
  let activator: Activator;
  const sse = new Set<http.ServerResponse>();

  beforeAll(async () => {
    cd = await startContainerd('2.1', daemonOptions('2.1'));
    const e = daemonOptions('2.1').env!;
    agent = await startAgent({ cd, env: { PATH: e.PATH!, FAKE_CUDA_MARKER: e.FAKE_CUDA_MARKER!, FAKE_CUDA_STATE_DIR: e.FAKE_CUDA_STATE_DIR! } });
    server = http.createServer((req, res) => {
      if (req.url === '/events') {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        res.flushHeaders();
        sse.add(res);
        res.on('close', () => sse.delete(res));
        return;
      }
      res.end(`host ${req.url}\n`);
    });
    wss = new WebSocketServer({ server });
    wss.on('connection', (ws) => ws.on('message', (m) => ws.send(`echo ${m.toString()}`)));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    upstream = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await activator?.stop();
    await agent?.stop();
    wss?.close();
    server?.closeAllConnections();
    server?.close();
    for (const id of ['loop', 'gpu']) if (cd) await removeContainer(cd, id);
    await cd?.stop();
  });

  const route = (id: string, kind: string): RouteSpec => ({
    name: id, host: `${id}.test`, workload: { namespace: cd.namespace, id }, upstream,
    sleep: { kind, idleMs: 800, minRunMs: 0, graceMs: 100 }, probe: { intervalMs: 10 },
  });

  it('an SSE stream and a WebSocket pass through while the workload runs and keep it awake', async () => {
    await runDetached(cd, SHIM_RUNTIME, 'loop', LOOP);
    activator = await startActivator({ agent: agent.socket, routes: [route('loop', 'checkpoint')] });

    // SSE: each event reaches the client as it is sent, and the open stream holds the sleep off.
    const events: string[] = [];
    let res!: http.IncomingMessage;
    const streamReq = http.get({ host: '127.0.0.1', port: Number(activator.listen.split(':')[1]), path: '/events', headers: { host: 'loop.test' }, agent: false }, (r) => {
      res = r;
      r.setEncoding('utf8');
      r.on('data', (c: string) => events.push(c));
    });
    await waitFor('the SSE stream upstream', () => sse.size === 1);
    for (let i = 0; i < 3; i++) {
      for (const s of sse) s.write(`data: tick ${i}\n\n`);
      await waitFor(`event ${i} at the client`, () => events.join('').includes(`data: tick ${i}\n\n`));
      await new Promise((r) => setTimeout(r, 700)); // 2.1 s in all: well past the idle time
    }
    expect(res.headers['content-type']).toBe('text/event-stream');
    expect((await activator.route('loop')).state).toBe('awake');
    expect((await task(cd, 'loop'))?.status).toBe('RUNNING');

    // A WebSocket as well, after the stream ends: echo through the tunnel, awake while it is open.
    streamReq.destroy();
    const ws = new WebSocket(`ws://${activator.listen}/ws`, { headers: { host: 'loop.test' } });
    await new Promise((r, j) => { ws.once('open', r); ws.once('error', j); });
    const reply = new Promise<string>((r) => ws.once('message', (m) => r(m.toString())));
    ws.send('hi');
    expect(await reply).toBe('echo hi');
    await new Promise((r) => setTimeout(r, 2000));
    expect((await activator.route('loop')).state).toBe('awake');
    expect((await task(cd, 'loop'))?.status).toBe('RUNNING');
    ws.close();

    // Nothing open any more: it goes to sleep.
    await waitRouteState(activator, 'loop', 'asleep');
    expect(await task(cd, 'loop')).toBeUndefined();
  });

  it('suspend: idle → suspended (GPU state in host memory) ; a request resumes it', async () => {
    await startCuda(cd, SHIM_RUNTIME, 'gpu');
    activator.setRoutes([route('loop', 'checkpoint'), route('gpu', 'suspend')]);
    const asleep = await waitRouteState(activator, 'gpu', 'asleep');
    expect(asleep.lastSleep).toMatchObject({ kind: 'suspend', ok: true });
    const client = agent.client();
    expect((await client.get({ namespace: cd.namespace, id: 'gpu' })).state).toBe(S.SUSPENDED);

    const woke = await get(activator.listen, '/x', { host: 'gpu.test' });
    expect(woke).toMatchObject({ status: 200, body: 'host /x\n' });
    expect(Number(woke.headers['x-kybernate-wake-ms'])).toBeGreaterThan(0);
    expect((await activator.route('gpu')).lastWake).toMatchObject({ from: 'suspend', ok: true });
    expect((await client.get({ namespace: cd.namespace, id: 'gpu' })).state).toBe(S.RUNNING);
    client.close();
  });
});
