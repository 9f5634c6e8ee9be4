// runc reports errors as text only; src/shim/runc.ts classifies them once, at that boundary: an id runc
// has no state for is KYB_ERR_NOT_FOUND, any other failure KYB_ERR_RUNTIME. Against the real runc.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KybernateError } from '../../src/errors';
import { which } from '../../src/host/versions';
import { Runc } from '../../src/shim/runc';

const runcBinary = which('runc');
const isRoot = process.getuid?.() === 0;
const lacks = runcBinary === undefined ? 'runc' : !isRoot ? 'root' : undefined;

async function failure(p: Promise<unknown>): Promise<{ code?: string; message: string }> {
  try {
    await p;
  } catch (err) {
    return { code: KybernateError.is(err) ? err.code : undefined, message: (err as Error).message };
  }
  throw new Error('expected a failure');
}

describe.skipIf(lacks !== undefined)(`runc errors by code${lacks ? ` (skipped: needs ${lacks})` : ''}`, () => {
  let dir: string;
  let runc: Runc;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kyb-runc-errors-'));
    fs.mkdirSync(path.join(dir, 'root'));
    runc = new Runc({ binary: runcBinary!, root: path.join(dir, 'root'), bundle: dir, logPath: path.join(dir, 'log.json'), systemdCgroup: false });
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('an id runc does not know is KYB_ERR_NOT_FOUND, for every command that names one', async () => {
    const calls: Array<[string, () => Promise<unknown>]> = [
      ['delete', () => runc.delete('nope', false)],
      ['kill', () => runc.kill('nope', 9, true)],
      ['state', () => runc.state('nope')],
      ['pause', () => runc.pause('nope')],
      ['ps', () => runc.ps('nope')],
    ];
    for (const [op, call] of calls) {
      const f = await failure(call());
      expect({ op, code: f.code }).toEqual({ op, code: 'KYB_ERR_NOT_FOUND' });
      expect(f.message).toBe(`runc ${op} failed: container does not exist`);
    }
  });

  it('another failure stays KYB_ERR_RUNTIME', async () => {
    // A root that is a file: runc fails before it looks for the container.
    const file = path.join(dir, 'root-file');
    fs.writeFileSync(file, '');
    const bad = new Runc({ ...runc.config, root: file });
    const f = await failure(bad.state('nope'));
    expect(f.code).toBe('KYB_ERR_RUNTIME');
    expect(f.message).toBe(`runc state failed: mkdir ${file}: not a directory`);
  });
});
