// Bad input against a running shim: malformed ttrpc frames, unknown methods and ids, bad OCI specs, no runc.
// Written for the kybernate shim; the same expectations hold for containerd's runc shim, which is how they
// were checked (KYBERNATE_E2E_RUNTIME=runc).
import { existsSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { expect, it } from 'vitest';
import { Status, StatusError } from '../../src/errors';
import { containerd } from '../../src/gen/proto';
import { TtrpcClient } from '../../src/ttrpc';
import { REPO_ROOT, TEST_IMAGE, binDir, type ContainerdVersion } from './support/harness';
import { describeMatrix } from './support/matrix';
import { LOOP, bundleDir, runDetached, shimSocket, shimTaskService, task, waitFor } from './support/ctr';
import { REQUEST, RawConn, frame, header, requestFrame } from './support/ttrpc-raw';

const stateReq = (id: string): Uint8Array => containerd.task.v2.StateRequest.encode({ id }).finish();

/** A running container, the socket of the shim serving it and the Task service name that shim speaks. */
interface Target { id: string; pid: number; socket: string; service: string }

async function callError(p: Promise<unknown>): Promise<StatusError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof StatusError) return err;
    throw err;
  }
  throw new Error('call succeeded');
}

describeMatrix('bad input', (ctx) => {
  /** A running container and the socket of the shim serving it. */
  async function target(prefix: string): Promise<Target> {
    const id = ctx.id(prefix);
    const { pid } = await runDetached(ctx.cd, ctx.rt.runtime, id, LOOP);
    return { id, pid, socket: shimSocket(ctx.cd, id), service: shimTaskService(ctx.cd, id) };
  }

  /** The shim still answers on a fresh connection and the container is untouched. */
  async function assertServing(t: Target): Promise<void> {
    const client = await TtrpcClient.connect(t.socket);
    try {
      const st = containerd.task.v2.StateResponse.decode(await client.call(t.service, 'State', stateReq(t.id), { timeoutMs: 10_000 }));
      expect(st.pid).toBe(t.pid);
    } finally {
      await client.close();
    }
    expect((await task(ctx.cd, t.id))?.status).toBe('RUNNING');
    expect(await ctx.cd.ctrOk(['tasks', 'exec', '--exec-id', 'alive', t.id, 'echo', 'ok'])).toBe('ok\n');
  }

  it('unknown methods and services answer Unimplemented (12)', async () => {
    const t = await target('unimpl');
    const client = await TtrpcClient.connect(t.socket);
    try {
      expect((await callError(client.call(t.service, 'Frobnicate', stateReq(t.id)))).status).toBe(Status.UNIMPLEMENTED);
      expect((await callError(client.call('no.such.Service', 'State', stateReq(t.id)))).status).toBe(Status.UNIMPLEMENTED);
    } finally {
      await client.close();
    }
    await assertServing(t);
  });

  it('unknown container ids answer NotFound (5)', async () => {
    const t = await target('notfound');
    const client = await TtrpcClient.connect(t.socket);
    try {
      for (const method of ['State', 'Pids', 'Pause', 'Resume']) {
        const payload = method === 'Pids' ? containerd.task.v2.PidsRequest.encode({ id: 'no-such-container' }).finish()
          : method === 'State' ? stateReq('no-such-container')
            : containerd.task.v2[`${method as 'Pause' | 'Resume'}Request`].encode({ id: 'no-such-container' }).finish();
        const err = await callError(client.call(t.service, method, payload));
        expect(err.status, `${method}: ${err.message}`).toBe(Status.NOT_FOUND);
      }
      const kill = containerd.task.v2.KillRequest.encode({ id: 'no-such-container', signal: 9 }).finish();
      expect((await callError(client.call(t.service, 'Kill', kill))).status).toBe(Status.NOT_FOUND);
    } finally {
      await client.close();
    }
    await assertServing(t);
  });

  it('malformed frames get error statuses or a closed connection, and the shim stays up', async () => {
    const t = await target('frames');
    const send = async (bytes: Buffer[], streamId: number) => {
      const c = await RawConn.connect(t.socket);
      for (const b of bytes) await c.write(b);
      const r = await c.response(streamId);
      c.destroy();
      return r;
    };
    // A Request whose payload is not a protobuf Request.
    expect(await send([frame(1, REQUEST, Buffer.from([0xff, 0xff, 0xff, 0x07, 0x01]))], 1))
      .toMatchObject({ code: Status.INVALID_ARGUMENT });
    // Client streams must use odd ids.
    expect(await send([requestFrame(2, t.service, 'State', stateReq(t.id))], 2)).toMatchObject({ code: Status.INVALID_ARGUMENT });
    // Longer than the 4 MiB limit: the payload is skipped and the stream answered.
    expect(await send([header(5 << 20, 1, REQUEST), Buffer.alloc(5 << 20)], 1))
      .toMatchObject({ code: Status.RESOURCE_EXHAUSTED });
    // An unknown message type is ignored; the connection goes on.
    expect(await send([frame(1, 0x7f, Buffer.from('??')), requestFrame(3, t.service, 'State', stateReq(t.id))], 3))
      .toMatchObject({ code: Status.OK });
    // Half a header, then hang up.
    const c = await RawConn.connect(t.socket);
    await c.write(header(100, 1, REQUEST).subarray(0, 6));
    c.end();
    expect(await c.response(1)).toBe('closed');
    // Random bytes.
    const r = await RawConn.connect(t.socket);
    await r.write(Buffer.from('GET / HTTP/1.1\r\nHost: shim\r\n\r\n'));
    r.destroy();

    await assertServing(t);
  });

  it('a bad OCI spec fails with a clear error and leaves nothing behind', async () => {
    const { cd, rt } = ctx;
    const bad = ctx.id('badbin');
    const r1 = await cd.ctr(['run', '--rm', '--runtime', rt.runtime, TEST_IMAGE, bad, '/no/such/binary']);
    expect(r1.code).not.toBe(0);
    expect(r1.stderr).toMatch(/\/no\/such\/binary.*(no such file|not found)/i);

    const dir = mkdtempSync(join(tmpdir(), 'kyb-badspec-'));
    try {
      const spec = JSON.parse(await cd.ctrOk(['oci', 'spec'])) as {
        root: { path: string }; process: { args?: string[]; cwd: string };
      };
      spec.root = { path: dir };
      spec.process.args = ['/bin/sh'];
      spec.process.cwd = 'relative/dir';
      writeFileSync(join(dir, 'config.json'), JSON.stringify(spec));
      const rel = ctx.id('badcwd');
      const r2 = await cd.ctr(['run', '--rm', '--runtime', rt.runtime, '--config', join(dir, 'config.json'), rel]);
      expect(r2.code).not.toBe(0);
      expect(r2.stderr).toMatch(/cwd.*absolute/i);
      for (const id of [bad, rel]) {
        expect(await task(cd, id)).toBeUndefined();
        await waitFor(`bundle of ${id} to be removed`, () => !existsSync(bundleDir(cd, id)));
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const ok = ctx.id('after-bad');
    expect(await cd.ctrOk(['run', '--rm', '--runtime', rt.runtime, TEST_IMAGE, ok, 'echo', 'fine'])).toBe('fine\n');
  });
});

const SYSTEM_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
let farm: string | undefined;

/**
 * A directory of links to every system executable except runc (Debian's runc package puts runc into /usr/bin
 * too, so no real system directory can be left on the PATH).
 */
function systemBinariesWithoutRunc(): string {
  if (farm) return farm;
  const dir = mkdtempSync(join(tmpdir(), 'kyb-norunc-'));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  for (const d of SYSTEM_DIRS) {
    if (!existsSync(d)) continue;
    for (const name of readdirSync(d)) {
      if (name !== 'runc' && !existsSync(join(dir, name))) symlinkSync(join(d, name), join(dir, name));
    }
  }
  farm = dir;
  return dir;
}

function pathWithoutRunc(v: ContainerdVersion): string[] {
  const own = binDir(v);
  return [join(REPO_ROOT, 'bin'), ...(SYSTEM_DIRS.includes(own) ? [] : [own]), systemBinariesWithoutRunc()];
}

describeMatrix('bad input without runc', (ctx) => {
  it('runc missing from PATH gives a clear error, twice, and leaves no task', async () => {
    const { cd, rt } = ctx;
    for (const id of [ctx.id('norunc'), ctx.id('norunc2')]) {
      // Twice: the failure must be repeatable, not a hang or a wedged shim.
      const r = await cd.ctr(['run', '--rm', '--runtime', rt.runtime, TEST_IMAGE, id, 'true']);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/runc/);
      expect(await task(cd, id)).toBeUndefined();
      await waitFor(`bundle of ${id} to be removed`, () => !existsSync(bundleDir(cd, id)));
    }
  });
}, {
  start: (v) => ({ env: { PATH: pathWithoutRunc(v).join(delimiter) } }),
  skip: (v) => (existsSync(join(binDir(v), 'runc')) && !SYSTEM_DIRS.includes(binDir(v))
    ? `runc is in ${binDir(v)}, next to containerd ${v}'s runc shim` : undefined),
});
