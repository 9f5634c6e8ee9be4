// Shared by the native tests: the repo root, and running reaper scenarios in their own node process.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { buildSync } from 'esbuild';

export const here = path.dirname(fileURLToPath(import.meta.url));
export const root = path.resolve(here, '..', '..');
export const addonPath = path.join(root, 'build', 'Release', 'kybernate.node');
export const isRoot = process.getuid?.() === 0;

let bundle: string | undefined;

/** Bundles fixtures/scenario.ts into build/native-test/ (the addon is found from there by walking up). */
export function scenarioBundle(): string {
  if (bundle !== undefined) return bundle;
  const out = path.join(root, 'build', 'native-test', 'scenario.cjs');
  buildSync({
    entryPoints: [path.join(here, 'fixtures', 'scenario.ts')],
    outfile: out,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    external: ['*.node'],
    logLevel: 'warning',
  });
  return (bundle = out);
}

/** Runs one scenario and returns the JSON it printed. */
export async function runScenario<T>(name: string): Promise<T> {
  const { stdout } = await promisify(execFile)(process.execPath, [scenarioBundle(), name], {
    timeout: 60_000,
    env: { ...process.env, KYBERNATE_ADDON: '' },
  });
  const lines = stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]) as T;
}

export function addonBuilt(): boolean {
  return fs.existsSync(addonPath);
}
