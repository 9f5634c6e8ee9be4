// The version × runtime matrix every e2e file runs over. Each file gets one containerd per version, shared by
// both runtimes; a test never depends on another test's containers.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, it, vi } from 'vitest';
import {
  ALL_VERSIONS, REPO_ROOT, RUNC_RUNTIME, SHIM_RUNTIME, missingReason, startContainerd, type Containerd,
  type ContainerdVersion, type StartOptions,
} from './harness';
import { removeContainer } from './ctr';

export const KYBERNATE_SHIM_BIN = join(REPO_ROOT, 'bin', 'containerd-shim-kybernate-v2');

export type RuntimeKind = 'runc' | 'kybernate';

export interface RuntimeCase {
  kind: RuntimeKind;
  /** Value for `ctr run --runtime`. */
  runtime: string;
  /** OCI annotation that puts containers into one shim process. */
  groupAnnotation: string;
  /** Substring of the shim server's command line. */
  shimName: string;
  skipReason?: string;
}

export function selectedRuntimes(): RuntimeCase[] {
  const sel = process.env.KYBERNATE_E2E_RUNTIME ?? 'both';
  if (!['runc', 'kybernate', 'both'].includes(sel)) {
    throw new Error(`KYBERNATE_E2E_RUNTIME must be runc, kybernate or both, not ${JSON.stringify(sel)}`);
  }
  const out: RuntimeCase[] = [];
  if (sel !== 'kybernate') {
    out.push({ kind: 'runc', runtime: RUNC_RUNTIME, groupAnnotation: 'io.containerd.runc.v2.group', shimName: 'containerd-shim-runc-v2' });
  }
  if (sel !== 'runc') {
    out.push({
      kind: 'kybernate', runtime: SHIM_RUNTIME, groupAnnotation: 'io.kybernate.group', shimName: 'containerd-shim-kybernate-v2',
      skipReason: existsSync(KYBERNATE_SHIM_BIN) ? undefined : 'bin/containerd-shim-kybernate-v2 not built (run make build)',
    });
  }
  return out;
}

export interface MatrixContext {
  readonly cd: Containerd;
  readonly rt: RuntimeCase;
  readonly version: ContainerdVersion;
  /** A fresh container id, removed (with its task) after the current test. */
  id(prefix: string): string;
}

let serial = 0;

// Longer than the harness's 60 s ctr timeout, so that a hung ctr call fails with its own command line and
// stderr instead of an anonymous test timeout.
vi.setConfig({ testTimeout: 120_000 });

/**
 * Declares `body` once per available containerd version and selected runtime. Unavailable combinations are
 * declared as skipped suites whose title says what is missing.
 */
export function describeMatrix(title: string, body: (ctx: MatrixContext) => void, opts: {
  runtimes?: RuntimeKind[];
  /** Extra options for this file's daemons. */
  start?: (v: ContainerdVersion) => StartOptions;
  /** Why this file cannot run against `v` here, if it cannot. */
  skip?: (v: ContainerdVersion) => string | undefined;
} = {}): void {
  const runtimes = selectedRuntimes().filter((r) => !opts.runtimes || opts.runtimes.includes(r.kind));
  describe(title, () => {
    for (const version of ALL_VERSIONS) {
      const only = process.env.KYBERNATE_E2E_VERSIONS?.split(',').map((x) => x.trim());
      const missing = (only && !only.includes(version) ? `not in KYBERNATE_E2E_VERSIONS=${only.join(',')}` : undefined)
        ?? missingReason(version) ?? opts.skip?.(version);
      if (missing !== undefined) {
        describe.skip(`containerd ${version}: ${missing}`, () => { it('skipped', () => {}); });
        continue;
      }
      describe(`containerd ${version}`, () => {
        let cd: Containerd | undefined;
        const runnable = runtimes.some((r) => r.skipReason === undefined);
        beforeAll(async () => {
          if (!runnable) return;
          const namespace = `kyb-e2e-${title.replace(/[^a-z0-9]+/gi, '-').toLowerCase()}`;
          cd = await startContainerd(version, { namespace, ...opts.start?.(version) });
        });
        afterAll(async () => { await cd?.stop(); });
        for (const rt of runtimes) {
          if (rt.skipReason !== undefined) {
            describe.skip(`${rt.kind}: ${rt.skipReason}`, () => { it('skipped', () => {}); });
            continue;
          }
          describe(rt.kind, () => {
            const created: string[] = [];
            afterEach(async () => {
              const ids = created.splice(0);
              if (cd) for (const id of ids) await removeContainer(cd, id);
            });
            body({
              get cd() {
                if (!cd) throw new Error('containerd did not start');
                return cd;
              },
              rt,
              version,
              id(prefix: string) {
                const id = `${prefix}-${rt.kind}-${process.pid}-${++serial}`;
                created.push(id);
                return id;
              },
            });
          });
        }
      });
    }
  });
}
