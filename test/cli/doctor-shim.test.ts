// `kybernate doctor`'s "shim binary" check against real containerd daemons of every version: one whose
// PATH lacks the shim (doctor FAILs with the fix, and containerd itself answers `ctr run` with "binary not
// installed") and one that finds it in bin/ (doctor OK, naming that file).
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ALL_VERSIONS, REPO_ROOT, SHIM_RUNTIME, TEST_IMAGE, binDir, missingReason, startContainerd, type Containerd,
} from '../harness/containerd';
import { bundle, kybernate } from './helpers';

interface Check { name: string; status: string; value: string; fix?: string; required: boolean; data?: Record<string, unknown> }

beforeAll(() => bundle(), 120_000);

async function shimCheck(address: string, env?: NodeJS.ProcessEnv): Promise<Check> {
  const r = await kybernate(['doctor', '--address', address, '--json'], env);
  const out = JSON.parse(r.stdout) as { checks: Check[] };
  const check = out.checks.find((c) => c.name === 'shim binary');
  if (!check) throw new Error(`no shim binary check in ${r.stdout}`);
  return check;
}

for (const version of ALL_VERSIONS) {
  const missing = missingReason(version);
  describe.skipIf(missing !== undefined)(`doctor shim binary, containerd ${version}${missing ? ` (skipped: ${missing})` : ''}`, () => {
    const daemons: Containerd[] = [];
    afterAll(async () => { for (const d of daemons) await d.stop(); });

    it('FAILs with the fix where containerd\'s PATH lacks the shim, as containerd itself does', async () => {
      // This version's own binaries and the system's, not this repository's bin/.
      const path = [binDir(version), '/usr/sbin', '/usr/bin', '/sbin', '/bin'].join(':');
      const cd = await startContainerd(version, { env: { PATH: path } });
      daemons.push(cd);
      const check = await shimCheck(cd.address);
      expect(check).toMatchObject({ status: 'FAIL', required: true });
      expect(check.data).toMatchObject({ binary: 'containerd-shim-kybernate-v2', containerdPid: cd.pid, path, found: null });
      expect(check.value).toContain(`containerd (pid ${cd.pid}, ${cd.address}) cannot find containerd-shim-kybernate-v2`);
      expect(check.fix).toMatch(/containerd's PATH/);
      // containerd agrees: the shim cannot be started.
      const r = await cd.ctr(['run', '--rm', '--runtime', SHIM_RUNTIME, TEST_IMAGE, `noshim-${process.pid}`, 'true']);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/binary not installed "containerd-shim-kybernate-v2"/);
    });

    it('is OK and names the file where containerd\'s PATH has the shim', async () => {
      const cd = await startContainerd(version);
      daemons.push(cd);
      const check = await shimCheck(cd.address);
      const shim = join(REPO_ROOT, 'bin', 'containerd-shim-kybernate-v2');
      expect(check).toMatchObject({ status: 'OK', data: { containerdPid: cd.pid, found: shim } });
      expect(check.value).toMatch(new RegExp(`^${shim} \\(PATH; as containerd \\(pid ${cd.pid}, `));
    });
  });
}

describe('doctor shim binary without a containerd at the address', () => {
  it('says so, looks the shim up with this shell\'s PATH, and only warns when it is not found there', async () => {
    const without = '/usr/sbin:/usr/bin:/sbin:/bin';
    const miss = await shimCheck('/nonexistent/containerd.sock', { ...process.env, PATH: without });
    expect(miss).toMatchObject({ status: 'WARN', required: false, data: { containerdPid: null, path: without, found: null } });
    expect(miss.value).toContain('containerd (not running at /nonexistent/containerd.sock; this shell\'s PATH assumed) cannot find');
    const withBin = `${join(REPO_ROOT, 'bin')}:${without}`;
    const hit = await shimCheck('/nonexistent/containerd.sock', { ...process.env, PATH: withBin });
    expect(hit).toMatchObject({ status: 'OK', data: { path: withBin, found: join(REPO_ROOT, 'bin', 'containerd-shim-kybernate-v2') } });
  });
});
