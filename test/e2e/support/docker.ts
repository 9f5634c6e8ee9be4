// The Docker Engine e2e files' matrix: one containerd and one dockerd on it per containerd version (2.1 and
// 1.7: Docker 26 vendors containerd's 1.7 client and works with both), the same commands for Docker's own
// runc runtime and for `--runtime kybernate`, side by side.
import { afterAll, afterEach, beforeAll, describe, it, vi } from 'vitest';
import {
  DOCKER_RUNTIME, DOCKER_TEST_IMAGE, dockerMissingReason, dockerdVersion, startDocker, type Docker, type DockerOptions,
} from '../../harness/docker';
import { missingReason, startContainerd, type Containerd, type ContainerdVersion, type StartOptions } from './harness';
import { selectedRuntimes, type RuntimeKind } from './matrix';
import { waitFor } from './ctr';

export { DOCKER_TEST_IMAGE };
export const DOCKER_VERSIONS: readonly ContainerdVersion[] = ['2.1', '1.7'];

export interface DockerRuntime {
  kind: RuntimeKind;
  /** `docker run --runtime` */
  name: string;
}

export interface DockerContext {
  readonly d: Docker;
  readonly cd: Containerd;
  readonly rt: DockerRuntime;
  readonly version: ContainerdVersion;
  /** A fresh container name, removed (docker rm -f) after the current test. */
  name(prefix: string): string;
  /** `docker run -d --name <name> --runtime <rt> --network none [extra] IMAGE cmd…`; resolves to the init's host pid. */
  runDetached(name: string, cmd: string[], extra?: string[]): Promise<number>;
}

export interface ContainerState {
  Status: string; Running: boolean; Paused: boolean; Restarting: boolean; OOMKilled: boolean; Pid: number; ExitCode: number;
}

export function state(d: Docker, name: string): Promise<ContainerState> {
  return d.inspect<ContainerState>(name, 'State');
}

export function waitState(d: Docker, name: string, what: string, pred: (s: ContainerState) => boolean, timeoutMs = 30_000): Promise<ContainerState> {
  return waitFor(`${name} to be ${what}`, async () => {
    const s = await state(d, name);
    return pred(s) ? s : undefined;
  }, timeoutMs, 100);
}

let serial = 0;

vi.setConfig({ testTimeout: 120_000 });

/** Declares `body` per containerd version and runtime; skipped with the reason in its title when Docker or containerd is missing. */
export function describeDocker(title: string, body: (ctx: DockerContext) => void, opts: {
  containerd?: () => StartOptions;
  docker?: DockerOptions;
} = {}): void {
  describe(title, () => {
    const noDocker = dockerMissingReason();
    if (noDocker !== undefined) {
      describe.skip(`Docker Engine: ${noDocker}`, () => { it('skipped', () => {}); });
      return;
    }
    for (const version of DOCKER_VERSIONS) {
      const only = process.env.KYBERNATE_E2E_VERSIONS?.split(',').map((x) => x.trim());
      const missing = (only && !only.includes(version) ? `not in KYBERNATE_E2E_VERSIONS=${only.join(',')}` : undefined)
        ?? missingReason(version);
      if (missing !== undefined) {
        describe.skip(`containerd ${version}: ${missing}`, () => { it('skipped', () => {}); });
        continue;
      }
      describe(`${dockerdVersion()} on containerd ${version}`, () => {
        let cd: Containerd | undefined;
        let d: Docker | undefined;
        beforeAll(async () => {
          cd = await startContainerd(version, { namespace: 'kyb-e2e-docker', ...opts.containerd?.() });
          d = await startDocker(cd, opts.docker);
        });
        afterAll(async () => {
          await d?.stop();
          await cd?.stop();
        });
        for (const r of selectedRuntimes()) {
          if (r.skipReason !== undefined) {
            describe.skip(`${r.kind}: ${r.skipReason}`, () => { it('skipped', () => {}); });
            continue;
          }
          const rt: DockerRuntime = { kind: r.kind, name: r.kind === 'runc' ? 'runc' : DOCKER_RUNTIME };
          describe(`--runtime ${rt.name}`, () => {
            const created: string[] = [];
            afterEach(async () => {
              const names = created.splice(0);
              if (d && names.length > 0) await d.docker(['rm', '-f', ...names], { timeoutMs: 60_000 });
            });
            const ctx: DockerContext = {
              get d() {
                if (!d) throw new Error('dockerd did not start');
                return d;
              },
              get cd() {
                if (!cd) throw new Error('containerd did not start');
                return cd;
              },
              rt,
              version,
              name(prefix: string) {
                const n = `${prefix}-${rt.kind}-${process.pid}-${++serial}`;
                created.push(n);
                return n;
              },
              async runDetached(name, cmd, extra = []) {
                await ctx.d.dockerOk(['run', '-d', '--name', name, '--runtime', rt.name, '--network', 'none', ...extra, DOCKER_TEST_IMAGE, ...cmd]);
                return (await waitState(ctx.d, name, 'running', (s) => s.Running && s.Pid > 0)).Pid;
              },
            };
            body(ctx);
          });
        }
      });
    }
  });
}
