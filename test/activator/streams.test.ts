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
  // Ids of this run: runc's state of another run's containers (one killed mid-way) may still be there.
  const LOOP_ID = `loop-${process.pid}`;
  const GPU_ID = `gpu-${process.pid}`;

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
    for (const id of [LOOP_ID, GPU_ID]) if (cd) await removeContainer(cd, id);
    await cd?.stop();
  });

  const route = (id: string, kind: string): RouteSpec => ({
    name: id, host: `${id}.test`, workload: { namespace: cd.namespace, id }, upstream,
    sleep: { kind, idleMs: 800, minRunMs: 0, graceMs: 100 }, probe: { intervalMs: 10 },
  });

  it('an SSE stream and a WebSocket pass through while the workload runs and keep it awake', async () => {
    await runDetached(cd, SHIM_RUNTIME, LOOP_ID, LOOP);
    activator = await startActivator({ agent: agent.socket, routes: [route(LOOP_ID, 'checkpoint')] });

    // SSE: each event reaches the client as it is sent, and the open stream holds the sleep off.
    const events: string[] = [];
    let res!: http.IncomingMessage;
    const streamReq = http.get({ host: '127.0.0.1', port: Number(activator.listen.split(':')[1]), path: '/events', headers: { host: `${LOOP_ID}.test` }, agent: false }, (r) => {
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
    expect((await activator.route(LOOP_ID)).state).toBe('awake');
    expect((await task(cd, LOOP_ID))?.status).toBe('RUNNING');

    // A WebSocket as well, after the stream ends: echo through the tunnel, awake while it is open.
    streamReq.destroy();
    const ws = new WebSocket(`ws://${activator.listen}/ws`, { headers: { host: `${LOOP_ID}.test` } });
    await new Promise((r, j) => { ws.once('open', r); ws.once('error', j); });
    const reply = new Promise<string>((r) => ws.once('message', (m) => r(m.toString())));
    ws.send('hi');
    expect(await reply).toBe('echo hi');
    await new Promise((r) => setTimeout(r, 2000));
    expect((await activator.route(LOOP_ID)).state).toBe('awake');
    expect((await task(cd, LOOP_ID))?.status).toBe('RUNNING');
    ws.close();

    // Nothing open any more: it goes to sleep.
    await waitRouteState(activator, LOOP_ID, 'asleep');
    expect(await task(cd, LOOP_ID)).toBeUndefined();
  });

  it('suspend: idle → suspended (GPU state in host memory) ; a request resumes it', async () => {
    await startCuda(cd, SHIM_RUNTIME, GPU_ID);
    activator.setRoutes([route(LOOP_ID, 'checkpoint'), route(GPU_ID, 'suspend')]);
    const asleep = await waitRouteState(activator, GPU_ID, 'asleep');
    expect(asleep.lastSleep).toMatchObject({ kind: 'suspend', ok: true });
    const client = agent.client();
    expect((await client.get({ namespace: cd.namespace, id: GPU_ID })).state).toBe(S.SUSPENDED);

    const woke = await get(activator.listen, '/x', { host: `${GPU_ID}.test` });
    expect(woke).toMatchObject({ status: 200, body: 'host /x\n' });
    expect(Number(woke.headers['x-kybernate-wake-ms'])).toBeGreaterThan(0);
    expect((await activator.route(GPU_ID)).lastWake).toMatchObject({ from: 'suspend', ok: true });
    expect((await client.get({ namespace: cd.namespace, id: GPU_ID })).state).toBe(S.RUNNING);
    client.close();
  });

  it('the agent exits on SIGTERM while it keeps a connection to a live shim, and the activator on its own', async () => {
    // The suspend and resume above left the agent a kept connection to the gpu container's shim.
    expect(await agent.stop()).toBe(0);
    expect(await activator.stop()).toBe(0);
  });
});
