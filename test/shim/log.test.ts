import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { openLogger } from '../../src/shim/log';

describe('shim log FIFO', () => {
  it('never blocks when nobody reads the FIFO: lines that do not fit are dropped', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kyb-log-'));
    const fifo = path.join(dir, 'log');
    execFileSync('mkfifo', [fifo]);
    // A reader that never reads, like containerd while it is stopped after having opened the FIFO.
    const reader = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    const log = openLogger(fifo, true, { test: 'x' });
    const line = 'x'.repeat(1024);
    // 4 MiB of log lines against a 64 KiB pipe buffer: a blocking write would hang this test forever.
    for (let i = 0; i < 4096; i++) log.info({ i }, line);
    const buf = Buffer.alloc(1 << 20);
    const n = fs.readSync(reader, buf, 0, buf.length, null);
    const first = buf.subarray(0, n).toString().split('\n')[0];
    expect(JSON.parse(first)).toMatchObject({ test: 'x', i: 0, msg: line });
    expect(n).toBeLessThan(4096 * 1024);
    fs.closeSync(reader);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('works without a FIFO (containerd created none)', () => {
    const log = openLogger(path.join(os.tmpdir(), 'kyb-no-such-dir', 'log'), false, {});
    expect(() => log.info('dropped')).not.toThrow();
  });
});
