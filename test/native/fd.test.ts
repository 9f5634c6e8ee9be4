// Pipes, the console socket (fd passing), winsize and peer credentials. These calls reap nothing, so
// they run inside the vitest worker.
import { spawn as spawnChild } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import * as native from '../../src/native';
import { here } from './helpers';

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kyb-fd-'));
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

const fdFlags = (fd: number) => fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8').match(/flags:\s+(\d+)/)![1];
const O_CLOEXEC = 0o2000000;
const O_NONBLOCK = 0o4000;

describe('pipe / close / setNonBlocking', () => {
  it('creates a CLOEXEC pipe that carries data, and toggles O_NONBLOCK', () => {
    const [r, w] = native.pipe();
    expect(parseInt(fdFlags(r), 8) & O_CLOEXEC).toBe(O_CLOEXEC);
    expect(parseInt(fdFlags(w), 8) & O_CLOEXEC).toBe(O_CLOEXEC);
    fs.writeSync(w, 'x');
    const buf = Buffer.alloc(1);
    expect(fs.readSync(r, buf)).toBe(1);
    native.setNonBlocking(r, true);
    expect(parseInt(fdFlags(r), 8) & O_NONBLOCK).toBe(O_NONBLOCK);
    expect(() => fs.readSync(r, buf)).toThrow(/EAGAIN/);
    native.setNonBlocking(r, false);
    expect(parseInt(fdFlags(r), 8) & O_NONBLOCK).toBe(0);
    native.close(r);
    native.close(w);
  });

  it('throws NativeError with code/errno/op and the caller\'s stack', () => {
    const [r, w] = native.pipe();
    native.close(r);
    native.close(w);
    let err: unknown;
    try {
      native.close(r);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(native.NativeError);
    expect(err).toMatchObject({ code: 'EBADF', errno: 9, op: 'close', name: 'NativeError' });
    expect((err as Error).stack).toContain('fd.test.ts');
  });

  it('rejects bad arguments with TypeError', () => {
    expect(() => native.close('3' as unknown as number)).toThrow(TypeError);
    expect(() => native.spawn({ file: '', args: [], env: [], stdio: [-1, -1, -1] })).toThrow(TypeError);
  });
});

describe('console socket', () => {
  it('receives a pty master sent with SCM_RIGHTS, and setWinsize resizes that pty', async () => {
    const sock = path.join(tmp, 'console.sock');
    const listenFd = native.listenUnix(sock);
    expect(fs.statSync(sock).mode & 0o777).toBe(0o600);
    const received = native.receiveFd(listenFd, 20_000);
    const helper = spawnChild('python3', [path.join(here, 'fixtures', 'send-pty.py'), sock], { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      const master = await received;
      expect(fs.readlinkSync(`/proc/self/fd/${master}`)).toBe('/dev/ptmx');
      expect(parseInt(fdFlags(master), 8) & O_CLOEXEC).toBe(O_CLOEXEC);
      native.setWinsize(master, 132, 43);
      const line = new Promise<string>((resolve) => readline.createInterface({ input: helper.stdout! }).once('line', resolve));
      helper.stdin!.write('go\n');
      expect(JSON.parse(await line)).toEqual({ rows: 43, cols: 132 });
      native.close(master);
    } finally {
      helper.kill();
      native.close(listenFd);
    }
  });

  it('rejects with ETIMEDOUT when nobody connects, with the caller\'s stack', async () => {
    const listenFd = native.listenUnix(path.join(tmp, 'idle.sock'));
    try {
      const err = await native.receiveFd(listenFd, 50).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(native.NativeError);
      expect(err).toMatchObject({ code: 'ETIMEDOUT', op: 'receiveFd' });
      expect((err as Error).stack).toContain('fd.test.ts');
    } finally {
      native.close(listenFd);
    }
  });

  it('rejects when the peer sends no fd', async () => {
    const sock = path.join(tmp, 'nofd.sock');
    const listenFd = native.listenUnix(sock);
    try {
      const received = native.receiveFd(listenFd, 20_000);
      const c = net.connect(sock, () => c.end('no fd here'));
      const err = await received.then(() => undefined, (e: unknown) => e);
      expect(err).toMatchObject({ code: 'KYB_ERR_NATIVE', op: 'receiveFd' });
      expect((err as Error).message).toMatch(/no fd/);
    } finally {
      native.close(listenFd);
    }
  });

  it('listenUnix fails with EADDRINUSE on an existing path and ENAMETOOLONG on a long one', () => {
    const sock = path.join(tmp, 'taken.sock');
    fs.writeFileSync(sock, '');
    expect(() => native.listenUnix(sock)).toThrow(expect.objectContaining({ code: 'EADDRINUSE', path: sock }));
    expect(() => native.listenUnix(path.join(tmp, 'x'.repeat(120)))).toThrow(expect.objectContaining({ code: 'ENAMETOOLONG' }));
  });

  it('setWinsize on a non-tty fails with ENOTTY', () => {
    const [r, w] = native.pipe();
    try {
      expect(() => native.setWinsize(r, 80, 24)).toThrow(expect.objectContaining({ code: 'ENOTTY', op: 'setWinsize' }));
    } finally {
      native.close(r);
      native.close(w);
    }
  });
});

describe('peerCredentials', () => {
  it('reports the pid/uid/gid of the process on the other end of a unix socket', async () => {
    const sock = path.join(tmp, 'peer.sock');
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(sock, resolve));
    try {
      // The server side's fd is only reachable through the handle; that is how the shim gets it too.
      const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
      const client = net.connect(sock);
      const conn = await accepted;
      const fd = (conn as unknown as { _handle: { fd: number } })._handle.fd;
      expect(native.peerCredentials(fd)).toEqual({ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
      client.destroy();
      conn.destroy();
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('fails with ENOTSOCK on a pipe', () => {
    const [r, w] = native.pipe();
    try {
      expect(() => native.peerCredentials(r)).toThrow(expect.objectContaining({ code: 'ENOTSOCK', op: 'peerCredentials' }));
    } finally {
      native.close(r);
      native.close(w);
    }
  });
});
