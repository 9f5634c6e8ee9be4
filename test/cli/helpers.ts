// The bundled `kybernate` CLI as a user runs it: dist/kybernate.cjs, bundled once per file from the
// working tree (under the build lock, so that a parallel `make build` never sees half a bundle).
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { root } from '../criu/helpers';

const exec = promisify(execFile);
export const cli = path.join(root, 'dist', 'kybernate.cjs');

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Bundles src/cli and src/shim into dist/ (scripts/bundle.cjs). */
export async function bundle(): Promise<void> {
  await exec('flock', ['/tmp/kyb-build.lock', process.execPath, path.join(root, 'scripts', 'bundle.cjs')]);
}

export async function kybernate(args: string[], env?: NodeJS.ProcessEnv): Promise<Run> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [cli, ...args], { timeout: 120_000, env: env ?? process.env });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}
