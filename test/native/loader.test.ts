// Finding kybernate.node, and run()'s child_process fallback when the reaper is not started.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { buildSync } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addonCandidates } from '../../src/native';
import { reaper } from '../../src/native/reaper';
import { run } from '../../src/native/run';
import { addonPath, root } from './helpers';

describe('addon loader', () => {
  let tmp: string;
  let script: string;
  beforeAll(() => {
    // A bundle outside the repo: neither dist/ nor a build/ above it has the addon.
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kyb-loader-'));
    script = path.join(tmp, 'probe.cjs');
    fs.writeFileSync(path.join(tmp, 'probe.ts'),
      `import * as n from ${JSON.stringify(path.join(root, 'src', 'native'))};\n` +
      'try { const [r, w] = n.pipe(); n.close(r); n.close(w); console.log(JSON.stringify({ ok: true })); }\n' +
      'catch (e) { console.log(JSON.stringify({ ok: false, code: (e as any).code, message: (e as Error).message })); }\n');
    buildSync({ entryPoints: [path.join(tmp, 'probe.ts')], outfile: script, bundle: true, platform: 'node', format: 'cjs', logLevel: 'warning' });
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  const probe = async (env: NodeJS.ProcessEnv) =>
    JSON.parse((await promisify(execFile)(process.execPath, [script], { env: { ...process.env, ...env } })).stdout);

  it('looks at KYBERNATE_ADDON, then next to the bundle, then build/Release walking up', () => {
    const saved = process.env.KYBERNATE_ADDON;
    process.env.KYBERNATE_ADDON = '/opt/x/kybernate.node';
    try {
      expect(addonCandidates('/a/dist')).toEqual([
        '/opt/x/kybernate.node',
        '/a/dist/kybernate.node',
        '/a/dist/build/Release/kybernate.node',
        '/a/build/Release/kybernate.node',
        '/build/Release/kybernate.node',
      ]);
    } finally {
      if (saved === undefined) delete process.env.KYBERNATE_ADDON;
      else process.env.KYBERNATE_ADDON = saved;
    }
  });

  it('says to run `make build` when the addon is nowhere', async () => {
    const r = await probe({ KYBERNATE_ADDON: '' });
    expect(r).toMatchObject({ ok: false, code: 'KYB_ERR_NATIVE' });
    expect(r.message).toContain('make build');
  });

  it('loads the addon named by KYBERNATE_ADDON', async () => {
    expect(await probe({ KYBERNATE_ADDON: addonPath })).toEqual({ ok: true });
  });
});

describe('run() without the reaper (child_process fallback)', () => {
  it('is used when the reaper is not started, with the same result shape', async () => {
    expect(reaper.started).toBe(false);
    const r = await run('/bin/sh', ['-c', 'cat; echo "$FOO" >&2; exit 3'], { input: 'in', env: ['FOO=bar'] });
    expect(r).toEqual({ status: 3, signal: 0, stdout: Buffer.from('in'), stderr: Buffer.from('bar\n'), timedOut: false });
    const killed = await run('sleep', ['100'], { timeoutMs: 100 });
    expect(killed).toMatchObject({ status: 137, signal: 9, timedOut: true });
    await expect(run('/nonexistent/kybernate-test', [])).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
