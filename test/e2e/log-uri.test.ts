// stdio as containerd log URIs: binary:// (containerd's logging-binary protocol, as nerdctl uses it) and
// file://, for every containerd version and runtime (see support/matrix.ts).
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { TEST_IMAGE } from './support/harness';
import { describeMatrix } from './support/matrix';
import { waitFor } from './support/ctr';

const dir = mkdtempSync(join(tmpdir(), 'kyb-loguri-'));
// A logging binary: copies fd 3 (stdout) and fd 4 (stderr) to the files named by its arguments, records
// the container it was told about, and signals readiness by closing fd 5.
const logger = join(dir, 'logger.sh');
writeFileSync(logger, [
  '#!/bin/sh',
  'echo "$CONTAINER_NAMESPACE/$CONTAINER_ID" > "$2.who"',
  // The copies must not inherit fd 5, or readiness would wait for them.
  'cat <&3 5>&- > "$2.out" &',
  'cat <&4 5>&- > "$2.err" &',
  'exec 5>&-',
  'wait',
  '',
].join('\n'));
chmodSync(logger, 0o755);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describeMatrix('log uri', (ctx) => {
  it('binary:// hands stdout and stderr to the logging binary, with the container named in its environment', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('logbin');
    const base = join(dir, id);
    const uri = `binary://${logger}?file=${encodeURIComponent(base)}`;
    await cd.ctrOk(['run', '--runtime', rt.runtime, '--log-uri', uri, TEST_IMAGE, id, 'sh', '-c', 'echo to-out; echo to-err >&2']);
    // containerd's runc shim 1.7+ keeps the binary's pipes until the task is deleted, so wait for the
    // content rather than for the binary to finish.
    const read = (f: string) => (existsSync(f) ? readFileSync(f, 'utf8') : '');
    await waitFor('logging binary output', () => read(`${base}.out`) === 'to-out\n' && read(`${base}.err`) === 'to-err\n');
    expect(read(`${base}.out`)).toBe('to-out\n');
    expect(read(`${base}.err`)).toBe('to-err\n');
    expect(readFileSync(`${base}.who`, 'utf8')).toBe(`${cd.namespace}/${id}\n`);
  });

  it('file:// appends the output to a file', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('logfile');
    const file = join(dir, `${id}.log`);
    await cd.ctrOk(['run', '--runtime', rt.runtime, '--log-uri', `file://${file}`, TEST_IMAGE, id, 'echo', 'into the file']);
    await waitFor('log file content', () => existsSync(file) && readFileSync(file, 'utf8').includes('into the file'));
    expect(readFileSync(file, 'utf8')).toBe('into the file\n');
  });

  it('a logging binary that does not exist fails the task with a clear error', async () => {
    const { cd, rt } = ctx;
    const id = ctx.id('lognone');
    const r = await cd.ctr(['run', '--runtime', rt.runtime, '--log-uri', `binary://${dir}/no-such-logger`, TEST_IMAGE, id, 'true']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/no-such-logger|no such file/i);
  });
});
