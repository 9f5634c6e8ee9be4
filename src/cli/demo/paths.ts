// Where the demo finds what `make build` and `make setup` made: the shim launcher (bin/), containerd 2.1
// (.deps/), the test image tarball (.deps/images/busybox.tar). Found by walking up from this file, which is
// dist/kybernate.cjs in the bundle (repo root one level up), src/cli/demo/*.ts under vitest (three levels),
// or <prefix>/lib/kybernate/kybernate.cjs when installed (launchers in <prefix>/bin, two levels up).
import * as fs from 'node:fs';
import * as path from 'node:path';

export const SHIM_BINARY = 'containerd-shim-kybernate-v2';

/** Directories from this file's up to the filesystem root. */
function ancestors(from: string = __dirname): string[] {
  const out: string[] = [];
  for (let d = path.resolve(from); ; d = path.dirname(d)) {
    out.push(d);
    if (path.dirname(d) === d) return out;
  }
}

export function isExecutable(f: string): boolean {
  try {
    fs.accessSync(f, fs.constants.X_OK);
    return fs.statSync(f).isFile();
  } catch {
    return false;
  }
}

/** The nearest `bin/` above this file that holds our shim's launcher. */
export function shimBinDir(from?: string): string | undefined {
  return ancestors(from).map((d) => path.join(d, 'bin')).find((b) => isExecutable(path.join(b, SHIM_BINARY)));
}

/** The checkout this code runs from: the nearest directory above it with .deps/ or package.json + bin/. */
export function repoRoot(from?: string): string | undefined {
  return ancestors(from).find((d) => fs.existsSync(path.join(d, '.deps')) || fs.existsSync(path.join(d, 'scripts', 'bundle.cjs')));
}

/** `.deps/<rel>` of the checkout, when it exists. */
export function depsFile(rel: string, from?: string): string | undefined {
  const root = repoRoot(from);
  const f = root === undefined ? undefined : path.join(root, '.deps', rel);
  return f !== undefined && fs.existsSync(f) ? f : undefined;
}

/** The test image (`make setup` / `make image`): busybox-static as docker.io/library/busybox:kybernate-test. */
export const DEMO_IMAGE = 'docker.io/library/busybox:kybernate-test';
export const demoImageTar = (from?: string): string | undefined => depsFile(path.join('images', 'busybox.tar'), from);

const SYSTEM_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

/** `command -v name` over `pathList` (a PATH value); undefined when absent. */
export function lookPath(name: string, pathList: string = process.env.PATH ?? ''): string | undefined {
  return [...pathList.split(':'), ...(pathList ? [] : SYSTEM_DIRS)].filter((d) => d.startsWith('/'))
    .map((d) => path.join(d, name)).find(isExecutable);
}

export const SYSTEM_PATH = SYSTEM_DIRS.join(':');
