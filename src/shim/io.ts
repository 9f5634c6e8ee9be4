// Process stdio. containerd hands us FIFO paths (or file:// URIs); the container gets plain pipes (which
// CRIU can checkpoint and restore), and the shim copies between the two with stream backpressure, so a
// reader that went away (containerd restarting) blocks the container like runc's shim does and never
// grows our memory. With a terminal, runc sends the pty master over a console socket instead.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tty from 'node:tty';
import type { Readable, Writable } from 'node:stream';
import { KybernateError } from '../errors';
import * as native from '../native';
import { type LogBinaryOwner, startLogBinary } from './log-binary';

export interface StdioConfig { stdin: string; stdout: string; stderr: string; terminal: boolean }

const CONSOLE_TIMEOUT_MS = 30_000;

type Target = { kind: 'null' } | { kind: 'fifo'; path: string } | { kind: 'file'; path: string } | { kind: 'binary'; uri: URL };

/** Parses a stdio location: '' (none), a FIFO path, fifo://path or file://path. */
export function parseTarget(uri: string): Target {
  if (uri === '') return { kind: 'null' };
  if (uri.startsWith('/')) return { kind: 'fifo', path: uri };
  let u: URL;
  try {
    u = new URL(uri);
  } catch {
    throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `invalid stdio location ${JSON.stringify(uri)}`);
  }
  if (u.protocol === 'fifo:') return { kind: 'fifo', path: u.pathname };
  if (u.protocol === 'file:') return { kind: 'file', path: u.pathname };
  if (u.protocol === 'binary:') return { kind: 'binary', uri: u };
  throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `unsupported stdio scheme ${u.protocol} in ${JSON.stringify(uri)} (supported: FIFO paths, fifo://, file://, binary://)`);
}

/** A writer for an output target. FIFOs are opened read-write so the open never blocks or fails with ENXIO. */
function openOutput(t: Target): Writable | undefined {
  switch (t.kind) {
    case 'null':
    case 'binary': // handled as a whole by startLogBinary
      return undefined;
    case 'file':
      fs.mkdirSync(path.dirname(t.path), { recursive: true });
      return fs.createWriteStream(t.path, { flags: 'a' });
    case 'fifo': {
      const fd = fs.openSync(t.path, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
      return new net.Socket({ fd, readable: false, writable: true });
    }
  }
}

/**
 * Opens the stdin FIFO for reading without ever blocking: a non-blocking FIFO reader reports neither data
 * nor hang-up until a writer has connected, so EOF arrives only once the client closed its end. (A blocking
 * open would park a threadpool thread until a writer appears, forever if the client never opens it.)
 */
function openInput(fifo: string): Readable {
  const fd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  return new net.Socket({ fd, readable: true, writable: false });
}

function pipeSocket(fd: number, readable: boolean): net.Socket {
  return new net.Socket({ fd, readable, writable: !readable });
}

/** stdio plumbing of one process. */
export class ProcessIO {
  /** fds runc hands to the container (closed here once runc has started it). */
  readonly childFds: [number, number, number] = [-1, -1, -1];
  consoleSocketPath?: string;
  private consoleListenFd = -1;
  private consoleFd?: Promise<number>;
  master = -1;
  private stdinWriter?: Writable;
  private stdinSource?: Readable;
  private readonly copies: Promise<void>[] = [];
  private closed = false;

  private constructor(readonly config: StdioConfig) {}

  static async create(config: StdioConfig, owner: LogBinaryOwner): Promise<ProcessIO> {
    const io = new ProcessIO(config);
    try {
      await io.setup(owner);
    } catch (err) {
      io.destroy();
      throw err;
    }
    return io;
  }

  private async setup(owner: LogBinaryOwner): Promise<void> {
    const out = parseTarget(this.config.stdout);
    const err = parseTarget(this.config.stderr);
    const input = parseTarget(this.config.stdin);
    if (input.kind === 'file' || input.kind === 'binary') throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `stdin cannot be a ${input.kind}:// URI`);
    if (out.kind === 'binary' || err.kind === 'binary') {
      if (this.config.terminal) throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', 'binary:// logging does not support a terminal');
      // containerd's binary logging names one binary for both streams, as the protocol hands it both.
      if (out.kind !== 'binary' || err.kind !== 'binary' || out.uri.href !== err.uri.href) {
        throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', 'a binary:// log URI must be used for both stdout and stderr');
      }
      const bin = await startLogBinary(out.uri, owner);
      this.childFds[1] = bin.stdout;
      this.childFds[2] = bin.stderr;
    }
    if (this.config.terminal) {
      // runc connects to this socket and sends the pty master; the path must fit sockaddr_un.
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kyb-pty-'));
      this.consoleSocketPath = path.join(dir, 's');
      this.consoleListenFd = native.listenUnix(this.consoleSocketPath);
      const received = native.receiveFd(this.consoleListenFd, CONSOLE_TIMEOUT_MS);
      received.catch(() => undefined); // awaited in started(); a failed create never asks for it
      this.consoleFd = received;
      return;
    }
    for (const [i, t] of [[1, out], [2, err]] as const) {
      if (t.kind === 'binary') continue;
      const w = openOutput(t);
      const [r, wfd] = native.pipe();
      this.childFds[i] = wfd;
      // No output wanted: a pipe whose bytes are dropped, not the shim's /dev/null. A host file the
      // container's mount namespace cannot name is an fd CRIU refuses to dump ("Can't lookup mount for
      // fd=1 path=/dev/null"): a container restored without IO could never be checkpointed again.
      if (w) this.copy(pipeSocket(r, true), w, true);
      else this.discard(pipeSocket(r, true));
    }
    if (input.kind === 'null') {
      // EOF at once, as /dev/null gives, through a pipe CRIU can dump (see above).
      const [r, w] = native.pipe();
      native.close(w);
      this.childFds[0] = r;
    }
    if (input.kind === 'fifo') {
      const [r, w] = native.pipe();
      this.childFds[0] = r;
      this.stdinWriter = pipeSocket(w, false);
      this.stdinSource = openInput(input.path);
      this.stdinSource.on('error', () => this.stdinWriter?.end());
      this.stdinSource.pipe(this.stdinWriter);
    }
  }

  /** Reads and drops everything `src` yields until the process's end closes. */
  private discard(src: Readable): void {
    this.copies.push(new Promise<void>((resolve) => {
      src.on('error', () => resolve());
      src.on('close', () => resolve());
      src.on('end', () => resolve());
      src.resume();
    }));
  }

  private copy(src: Readable, dst: Writable, endDst: boolean): void {
    this.copies.push(new Promise<void>((resolve) => {
      const finish = () => resolve();
      src.on('error', () => { src.unpipe(dst); if (endDst) dst.end(); finish(); });
      dst.on('error', () => { src.destroy(); finish(); });
      src.on('end', finish);
      src.on('close', finish);
      src.pipe(dst, { end: endDst });
    }));
  }

  /** Called after runc created the process: drop our copies of the child's ends; wire the console. */
  async started(): Promise<void> {
    for (let i = 0; i < 3; i++) {
      if (this.childFds[i] >= 0) native.close(this.childFds[i]);
      this.childFds[i] = -1;
    }
    if (!this.consoleFd) return;
    try {
      this.master = await this.consoleFd;
    } finally {
      this.closeConsoleSocket();
    }
    this.wireConsole();
  }

  private wireConsole(): void {
    const reader = new tty.ReadStream(this.master);
    const out = openOutput(parseTarget(this.config.stdout));
    if (out) this.copy(reader, out, true);
    else reader.resume();
    const input = parseTarget(this.config.stdin);
    if (input.kind === 'fifo') {
      const master = this.master;
      const src = openInput(input.path);
      this.stdinSource = src;
      src.on('error', () => undefined);
      // Writes go to the master fd directly; a tty handle for writing would register the fd twice.
      src.on('data', (chunk: Buffer) => {
        try {
          fs.writeSync(master, chunk);
        } catch {
          src.destroy();
        }
      });
    }
  }

  private closeConsoleSocket(): void {
    if (this.consoleListenFd >= 0) {
      native.close(this.consoleListenFd);
      // A receiveFd still waiting (runc failed before sending the pty) holds a threadpool thread until
      // it times out; a connection that sends nothing ends it now.
      if (this.master < 0 && this.consoleSocketPath) net.connect(this.consoleSocketPath).on('error', () => undefined).on('connect', function (this: net.Socket) { this.destroy(); });
    }
    this.consoleListenFd = -1;
    if (this.consoleSocketPath) fs.rmSync(path.dirname(this.consoleSocketPath), { recursive: true, force: true });
  }

  /** Sets the terminal's size; a process without a terminal has none to resize (a no-op, as in containerd's runc shim). */
  resize(width: number, height: number): void {
    if (this.master < 0) return;
    native.setWinsize(this.master, width, height);
  }

  /** CloseIO: the container sees EOF on stdin. */
  closeStdin(): void {
    this.stdinSource?.destroy();
    this.stdinWriter?.end();
  }

  /** Waits until output copies drained (the process exited), bounded by timeoutMs. */
  async drain(timeoutMs = 2_000): Promise<void> {
    let t: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(this.copies), new Promise((r) => { t = setTimeout(r, timeoutMs); })]);
    clearTimeout(t);
  }

  /** Releases everything; safe to call more than once. */
  destroy(): void {
    if (this.closed) return;
    this.closed = true;
    for (let i = 0; i < 3; i++) if (this.childFds[i] >= 0) { try { native.close(this.childFds[i]); } catch { /* already closed */ } this.childFds[i] = -1; }
    this.closeConsoleSocket();
    this.closeStdin();
    this.stdinSource?.destroy();
    if (this.master >= 0) {
      try { native.close(this.master); } catch { /* closed with its stream */ }
      this.master = -1;
    }
  }
}
