// The example configs in shim-config/ parse in every containerd they are meant for and register
// the kybernate runtime there.
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runTool } from './cleanup';
import { ALL_VERSIONS, REPO_ROOT, binDir, missingReason } from './containerd';

for (const version of ALL_VERSIONS) {
  const missing = missingReason(version);
  const file = version.startsWith('1.') ? 'config-v2.toml' : 'config-v3.toml';
  describe.skipIf(missing !== undefined)(`shim-config/${file} on containerd ${version}${missing ? ` (skipped: ${missing})` : ''}`, () => {
    it('is accepted by `containerd config dump` with the kybernate runtime', async () => {
      const r = await runTool(join(binDir(version), 'containerd'), ['--config', join(REPO_ROOT, 'shim-config', file), 'config', 'dump']);
      expect(r.code, r.stderr).toBe(0);
      const section = r.stdout.split(/\n\s*\n/).find((s) => /containerd\.runtimes\.kybernate\]/.test(s));
      expect(section, 'kybernate runtime section').toBeDefined();
      expect(section).toMatch(/runtime_type = ["']io\.containerd\.kybernate\.v2["']/);
      expect(section).toMatch(/pod_annotations = \[["']kybernate\.io\/\*["']\]/);
    });
  });
}
