// The process state machine on its own: which operations each state allows, what follows, and what an
// exit that races with an operation does.
import { describe, expect, it } from 'vitest';
import { Process } from '../../src/shim/process/process';
import { KybernateError } from '../../src/errors';

class FakeProcess extends Process {
  readonly kind: 'init' | 'exec';
  calls: string[] = [];
  /** Resolves the pending worker, to let a test interleave an exit with it. */
  release?: () => void;
  constructor(kind: 'init' | 'exec' = 'init', private readonly blockOn = '') {
    super('p', { stdin: '', stdout: '', stderr: '', terminal: false });
    this.kind = kind;
  }
  private async work(name: string): Promise<void> {
    this.calls.push(name);
    if (name === this.blockOn) await new Promise<void>((r) => { this.release = r; });
  }
  doStart() { return this.work('start'); }
  doDelete() { return this.work('delete'); }
  doKill() { return this.work('kill'); }
  doPause() { return this.work('pause'); }
  doResume() { return this.work('resume'); }
  doUpdate() { return this.work('update'); }
}

const code = async (p: Promise<unknown>) => {
  try {
    await p;
    return 'ok';
  } catch (err) {
    return KybernateError.is(err) ? err.code : String(err);
  }
};

describe('process states', () => {
  it('walks created → running → paused → running → stopped → deleted', async () => {
    const p = new FakeProcess();
    expect(p.status).toBe('created');
    await p.start();
    expect(p.status).toBe('running');
    await p.pause();
    expect(p.status).toBe('paused');
    await p.resume();
    expect(p.status).toBe('running');
    p.setExited(137);
    expect(p.status).toBe('stopped');
    expect((await p.wait()).status).toBe(137);
    await p.delete();
    expect(p.status).toBe('deleted');
    expect(p.calls).toEqual(['start', 'pause', 'resume', 'delete']);
  });

  it('refuses illegal operations with FailedPrecondition and touches nothing', async () => {
    const p = new FakeProcess();
    expect(await code(p.pause())).toBe('KYB_ERR_FAILED_PRECONDITION');
    expect(await code(p.resume())).toBe('KYB_ERR_FAILED_PRECONDITION');
    await p.start();
    expect(await code(p.start())).toBe('KYB_ERR_FAILED_PRECONDITION');
    expect(await code(p.delete())).toBe('KYB_ERR_FAILED_PRECONDITION');
    expect(await code(p.resume())).toBe('KYB_ERR_FAILED_PRECONDITION');
    expect(p.calls).toEqual(['start']);
  });

  it('answers NotFound for a finished or deleted process, as containerd expects', async () => {
    const p = new FakeProcess();
    await p.start();
    p.setExited(0);
    expect(await code(p.kill(15, false))).toBe('KYB_ERR_NOT_FOUND');
    await p.delete();
    expect(await code(p.kill(15, false))).toBe('KYB_ERR_NOT_FOUND');
    expect(await code(p.start())).toBe('KYB_ERR_NOT_FOUND');
  });

  it('an exec cannot be paused, and a never-started exec has nothing to kill', async () => {
    const e = new FakeProcess('exec');
    expect(await code(e.kill(9, false))).toBe('KYB_ERR_NOT_FOUND');
    await e.start();
    expect(await code(e.pause())).toBe('KYB_ERR_FAILED_PRECONDITION');
  });

  it('an exit during pause wins over the late transition to paused', async () => {
    const p = new FakeProcess('init', 'pause');
    await p.start();
    const pausing = p.pause();
    await Promise.resolve();
    p.setExited(9);
    p.release?.();
    await pausing;
    expect(p.status).toBe('stopped');
    expect(p.exit?.status).toBe(9);
  });

  it('serialises operations: a second pause waits for the first and is then refused', async () => {
    const p = new FakeProcess('init', 'pause');
    await p.start();
    const first = p.pause();
    const second = code(p.pause());
    await Promise.resolve();
    p.release?.();
    await first;
    expect(await second).toBe('KYB_ERR_FAILED_PRECONDITION');
    expect(p.calls.filter((c) => c === 'pause')).toHaveLength(1);
  });
});
