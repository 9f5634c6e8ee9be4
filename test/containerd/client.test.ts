// src/containerd's client against real containerd daemons of every installed version (test/harness):
// each call's result and shape, the namespace in metadata, the deadline, cancellation, the error codes,
// and the event stream's start and end. Containers run on the kybernate shim; one runc container shows
// that the runtime filter works.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ContainerdClient, type EventEnvelope } from '../../src/containerd/client';
import { KybernateError, type ErrorCode } from '../../src/errors';
import { containerd, google } from '../../src/gen/proto';
import { LOOP, removeContainer, runDetached, waitFor } from '../e2e/support/ctr';
import { ContainerdClient as TestGrpc } from '../e2e/support/grpc';
import {
  ALL_VERSIONS, RUNC_RUNTIME, SHIM_RUNTIME, TEST_IMAGE, missingReason, startContainerd, type Containerd,
} from '../e2e/support/harness';
import { KYBERNATE_SHIM_BIN } from '../e2e/support/matrix';

const SIGTERM = 15;
const SIGKILL = 9;
const SYNC_TOPIC = '/kybernate/test/containerd-client-sync';

/** Resolves to the KybernateError `p` rejects with; fails when it resolves or rejects with anything else. */
async function rejection(p: Promise<unknown>): Promise<KybernateError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  if (!KybernateError.is(err)) throw new Error(`expected a KybernateError, got ${String(err)}`);
  return err;
}

async function expectCode(p: Promise<unknown>, code: ErrorCode, message: RegExp): Promise<KybernateError> {
  const err = await rejection(p);
  expect(err.code, err.message).toBe(code);
  expect(err.message).toMatch(message);
  return err;
}

/** The container id of a /tasks/start or /tasks/exit event. */
function taskEventId(e: EventEnvelope): string {
  const v = e.event?.value ?? new Uint8Array();
  if (e.topic === '/tasks/start') return containerd.events.TaskStart.decode(v).containerId;
  if (e.topic === '/tasks/exit') return containerd.events.TaskExit.decode(v).containerId;
  return '';
}

it('a socket that does not exist: KYB_ERR_UNAVAILABLE at once, naming the socket', async () => {
  const address = join(tmpdir(), `kyb-no-such-dir-${process.pid}`, 'containerd.sock');
  const client = new ContainerdClient({ address, timeoutMs: 5_000 });
  try {
    const t0 = Date.now();
    const err = await expectCode(client.version(), 'KYB_ERR_UNAVAILABLE', /^containerd Version\.Version: /);
    expect(err.message).toContain(address);
    expect(Date.now() - t0).toBeLessThan(4_000);
    await expectCode(client.task('default', 'x'), 'KYB_ERR_UNAVAILABLE', /^containerd Tasks\.Get: /);
  } finally {
    client.close();
  }
});

for (const version of ALL_VERSIONS) {
  const missing = missingReason(version)
    ?? (existsSync(KYBERNATE_SHIM_BIN) ? undefined : 'bin/containerd-shim-kybernate-v2 not built (run make build)');
  describe.skipIf(missing !== undefined)(`containerd ${version}${missing ? `: ${missing}` : ''}`, () => {
    let cd: Containerd;
    let client: ContainerdClient;
    let ns: string;
    let serial = 0;
    const created: string[] = [];
    /** A fresh container id, removed (with its task) after the test. */
    const newId = (prefix: string): string => {
      const id = `${prefix}-${process.pid}-${++serial}`;
      created.push(id);
      return id;
    };
    /** `ctr run -d` of LOOP on `runtime`; resolves once the task runs. */
    const run = (id: string, runtime = SHIM_RUNTIME): Promise<unknown> => runDetached(cd, runtime, id, LOOP);
    /**
     * A container without a task, as `ctr container create` leaves it. Its command has no dashed word: ctr
     * 1.6 reorders flags after the arguments and would read LOOP's `-c` as its own --config.
     */
    const createContainer = (id: string): Promise<string> =>
      cd.ctrOk(['containers', 'create', '--runtime', SHIM_RUNTIME, TEST_IMAGE, id, 'sleep', '1000000']);

    /**
     * containerd answers nothing before a stream's first event: publish a marker until `events` has it, so
     * the subscription is known to be live. The subscription's filters must let SYNC_TOPIC through.
     */
    const untilLive = async (events: EventEnvelope[]): Promise<void> => {
      const publisher = new TestGrpc(cd.address, ns);
      try {
        await waitFor('the subscription to deliver its marker', async () => {
          await publisher.unary('/containerd.services.events.v1.Events/Publish', containerd.services.events.v1.PublishRequest,
            google.protobuf.Empty, { topic: SYNC_TOPIC, event: { type_url: 'kybernate.test.Sync', value: new Uint8Array() } });
          return events.some((e) => e.topic === SYNC_TOPIC);
        }, 10_000, 100);
      } finally {
        publisher.close();
      }
    };

    beforeAll(async () => {
      cd = await startContainerd(version, { namespace: 'kyb-containerd-client' });
      ns = cd.namespace;
      client = new ContainerdClient({ address: cd.address });
    });
    afterEach(async () => {
      for (const id of created.splice(0)) await removeContainer(cd, id);
    });
    afterAll(async () => {
      client?.close();
      await cd?.stop();
    });

    it('version() is the daemon\'s', async () => {
      const v = await client.version();
      expect(v.version.replace(/^v/, '')).toMatch(new RegExp(`^${version.replace('.', '\\.')}\\.`));
      expect(typeof v.revision).toBe('string');
    });

    it('namespaces() lists a namespace once a container exists in it', async () => {
      const other = `kyb-client-ns-${process.pid}`;
      const id = `ns-${process.pid}`;
      const rootfs = mkdtempSync(join(tmpdir(), 'kyb-rootfs-'));
      expect(await client.namespaces()).not.toContain(other);
      try {
        await cd.ctrOk(['--namespace', other, 'containers', 'create', '--rootfs', rootfs, id, 'true']);
        expect(await client.namespaces()).toEqual(expect.arrayContaining([ns, other]));
        expect((await client.containers(other)).map((c) => c.id)).toEqual([id]);
      } finally {
        await cd.ctr(['--namespace', other, 'containers', 'rm', id]);
        await cd.ctr(['namespaces', 'rm', other]);
        rmSync(rootfs, { recursive: true, force: true });
      }
    });

    it('containers() filters by runtime and reads every field; container() of a missing id is KYB_ERR_NOT_FOUND', async () => {
      const kyb = newId('kyb');
      const runc = newId('runc');
      await Promise.all([run(kyb), run(runc, RUNC_RUNTIME)]);

      const mine = await client.containers(ns, [`runtime.name==${SHIM_RUNTIME}`]);
      expect(mine.map((c) => c.id)).toContain(kyb);
      expect(mine.map((c) => c.id)).not.toContain(runc);
      expect((await client.containers(ns)).map((c) => c.id)).toEqual(expect.arrayContaining([kyb, runc]));

      const c = await client.container(ns, kyb);
      expect(c).toMatchObject({ id: kyb, runtime: SHIM_RUNTIME, image: TEST_IMAGE, snapshotter: cd.snapshotter, snapshotKey: kyb });
      expect(c.spec?.typeUrl).toContain('opencontainers/runtime-spec');
      expect(JSON.parse(Buffer.from(c.spec!.value).toString('utf8')).process.args).toEqual(LOOP);
      expect(c.createdAt).toBeInstanceOf(Date);
      expect(Math.abs(c.createdAt!.getTime() - Date.now())).toBeLessThan(120_000);
      expect(typeof c.labels).toBe('object');

      await expectCode(client.container(ns, 'no-such-container'), 'KYB_ERR_NOT_FOUND', /^containerd Containers\.Get: .*no-such-container/);
      // The namespace travels in metadata: the container is not found in another one.
      await expectCode(client.container('kyb-other-namespace', kyb), 'KYB_ERR_NOT_FOUND', /^containerd Containers\.Get: /);
    });

    it('task(): running, paused and resumed; undefined without a task', async () => {
      const id = newId('task');
      await run(id);
      const t = await client.task(ns, id);
      expect(t).toMatchObject({ id, status: 'running', exitedAt: undefined, terminal: false });
      expect(t!.pid).toBeGreaterThan(0);

      await client.pauseTask(ns, id);
      expect((await client.task(ns, id))?.status).toBe('paused');
      await client.resumeTask(ns, id);
      expect((await client.task(ns, id))?.status).toBe('running');

      const bare = newId('bare');
      await createContainer(bare);
      expect(await client.task(ns, bare)).toBeUndefined();
      expect(await client.task(ns, 'no-such-container')).toBeUndefined();
    });

    it('kill, wait and delete: the exit status of the trap (7)', async () => {
      const id = newId('kill');
      await run(id);
      const { pid } = (await client.task(ns, id))!;
      const waiting = client.waitTask(ns, id);
      await client.killTask(ns, id, SIGTERM);
      const exit = await waiting;
      expect(exit.exitStatus).toBe(7);
      expect(exit.exitedAt).toBeInstanceOf(Date);
      expect((await client.task(ns, id))).toMatchObject({ status: 'stopped', exitStatus: 7 });

      const deleted = await client.deleteTask(ns, id);
      expect(deleted).toMatchObject({ exitStatus: 7, pid });
      expect(deleted.exitedAt?.getTime()).toBe(exit.exitedAt?.getTime());
      expect(await client.task(ns, id)).toBeUndefined();
      await expectCode(client.deleteTask(ns, id), 'KYB_ERR_NOT_FOUND', /^containerd Tasks\.Delete: /);
    });

    it('createTask and startTask of a created container (no IO), then kill -a and delete', async () => {
      const id = newId('create');
      await createContainer(id);
      const { pid } = await client.createTask(ns, { containerId: id });
      expect(pid).toBeGreaterThan(0);
      expect(await client.task(ns, id)).toMatchObject({ status: 'created', pid, stdin: '', stdout: '', stderr: '' });
      await expectCode(client.createTask(ns, { containerId: id }), 'KYB_ERR_ALREADY_EXISTS', /^containerd Tasks\.Create: /);

      expect(await client.startTask(ns, id)).toEqual({ pid });
      expect((await client.task(ns, id))?.status).toBe('running');

      await client.killTask(ns, id, SIGKILL, true);
      expect((await client.waitTask(ns, id)).exitStatus).toBe(128 + SIGKILL);
      expect(await client.deleteTask(ns, id)).toMatchObject({ exitStatus: 128 + SIGKILL, pid });
      expect(await client.task(ns, id)).toBeUndefined();
      await expectCode(client.createTask(ns, { containerId: 'no-such-container' }), 'KYB_ERR_NOT_FOUND',
        /^containerd Containers\.Get: /);
    });

    it('subscribe() delivers /tasks/start and /tasks/exit; close() ends it with onEnd() and no error', async () => {
      const events: EventEnvelope[] = [];
      const ends: Array<Error | undefined> = [];
      const sub = client.subscribe(['topic=="/tasks/start"', 'topic=="/tasks/exit"', `topic=="${SYNC_TOPIC}"`],
        (e) => events.push(e), (err) => ends.push(err));
      await untilLive(events);

      const id = newId('events');
      await run(id);
      await client.killTask(ns, id, SIGKILL);
      const exit = await waitFor('/tasks/exit', () => events.find((e) => e.topic === '/tasks/exit' && taskEventId(e) === id));
      expect(exit.namespace).toBe(ns);
      expect(exit.event?.typeUrl).toBe('containerd.events.TaskExit');
      expect(exit.timestamp).toBeInstanceOf(Date);
      expect(containerd.events.TaskExit.decode(exit.event!.value).exitStatus).toBe(128 + SIGKILL);
      expect(events.some((e) => e.topic === '/tasks/start' && taskEventId(e) === id)).toBe(true);
      expect(ends).toEqual([]);

      sub.close();
      sub.close();
      await waitFor('onEnd', () => ends.length > 0, 5_000);
      const seen = events.length;
      await new Promise((r) => setTimeout(r, 200));
      expect(ends).toEqual([undefined]);
      expect(events.length).toBe(seen);
    });

    it('a deadline that passes is KYB_ERR_DEADLINE; an abort is KYB_ERR_CANCELLED', async () => {
      const id = newId('deadline');
      await run(id);
      // Repeated: containerd's own deadline error (UNKNOWN on 1.6) sometimes beats grpc-js's timer.
      for (let i = 0; i < 20; i++) {
        await expectCode(client.waitTask(ns, id, { timeoutMs: 1 + (i % 5) }), 'KYB_ERR_DEADLINE', /^containerd Tasks\.Wait: /);
      }

      const ac = new AbortController();
      const waiting = client.waitTask(ns, id, { signal: ac.signal });
      setTimeout(() => ac.abort(), 50);
      await expectCode(waiting, 'KYB_ERR_CANCELLED', /^containerd Tasks\.Wait: /);
      await expectCode(client.task(ns, id, { signal: AbortSignal.abort() }), 'KYB_ERR_CANCELLED', /^containerd Tasks\.Get: /);
      // The task is untouched by either.
      expect((await client.task(ns, id))?.status).toBe('running');
    });

    it('a closed client fails calls with KYB_ERR_UNAVAILABLE and ends new subscriptions at once', async () => {
      const c = new ContainerdClient({ address: cd.address });
      expect((await c.version()).version).not.toBe('');
      const ends: Array<Error | undefined> = [];
      c.subscribe([], () => {}, (err) => ends.push(err));
      c.close();
      c.close();
      await waitFor('the open subscription to end', () => ends.length === 1, 5_000);
      expect(ends).toEqual([undefined]);
      await expectCode(c.version(), 'KYB_ERR_UNAVAILABLE', /^containerd Version\.Version: .*closed/);
      const late: Array<Error | undefined> = [];
      c.subscribe([], () => {}, (err) => late.push(err));
      await waitFor('the late subscription to end', () => late.length === 1, 5_000);
      expect(KybernateError.is(late[0]) && late[0].code).toBe('KYB_ERR_UNAVAILABLE');
    });

    // Last: it restarts the daemon the other tests share.
    it('containerd restarts: the subscription ends with an error, and the same client reaches the new daemon', async () => {
      const events: EventEnvelope[] = [];
      const ends: Array<Error | undefined> = [];
      client.subscribe([`topic=="${SYNC_TOPIC}"`], (e) => events.push(e), (err) => ends.push(err));
      await untilLive(events);
      await cd.restart();
      await waitFor('onEnd', () => ends.length > 0, 10_000);
      await expectCode(Promise.reject(ends[0]), 'KYB_ERR_UNAVAILABLE', /^containerd Events\.Subscribe: .*containerd\.sock/);
      // grpc-js reconnects within its (capped) backoff.
      const v = await waitFor('the client to reach the restarted daemon', () => client.version({ timeoutMs: 2_000 }), 10_000, 200);
      expect(v.version).not.toBe('');
    });
  });
}
