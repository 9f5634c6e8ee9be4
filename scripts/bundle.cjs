#!/usr/bin/env node
// Bundles the TypeScript entry points into dist/*.cjs with esbuild and writes the launchers in bin/.
// One bundled file per binary keeps `start` cheap: node parses one file, and heavy modules are
// loaded lazily through dynamic import() (esbuild keeps those lazy inside the bundle).
'use strict';
const esbuild = require('esbuild');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const dist = path.join(root, 'dist');
const bin = path.join(root, 'bin');
const entries = {
  'containerd-shim-kybernate-v2': 'src/shim/main.ts',
  kybernate: 'src/cli/main.ts',
  'kybernate-agent': 'src/agent/main.ts',
  'kybernate-activator': 'src/activator/main.ts',
};

fs.mkdirSync(dist, { recursive: true });
fs.mkdirSync(bin, { recursive: true });
const addon = path.join(root, 'build', 'Release', 'kybernate.node');
// Running shims have dist/kybernate.node mapped: rewriting it in place (same inode) swaps the pages
// under them and they crash in their next native call. A new file renamed over it leaves their mapping
// on the old inode; an unchanged addon is not touched at all.
if (fs.existsSync(addon)) {
  const target = path.join(dist, 'kybernate.node');
  const same = fs.existsSync(target) && fs.readFileSync(target).equals(fs.readFileSync(addon));
  if (!same) {
    const tmp = `${target}.${process.pid}.tmp`;
    fs.copyFileSync(addon, tmp);
    fs.renameSync(tmp, target);
  }
}

// The shim's native front (native/front, built by node-gyp): containerd execs it for `start` and `delete`
// so that no Node boots on their path. It finds node, the shim bundle and the build id in a conf beside it.
const SHIM = 'containerd-shim-kybernate-v2';
const front = path.join(root, 'build', 'Release', 'kybernate-shim-front');
// Node options for every shim process (one-shots, daemons, spares): see the README's "Memory" notes.
// Measured on an idle spare (private dirty memory 17.5 → 15.2 MiB minified, → 13.7 MiB with these): a 1 MiB
// young generation (a shim allocates little and briefly) and no V8 worker threads (GC and compiles of a
// small heap run on the main thread). Node's own text (about 38 MiB of RSS) is shared by every Node process.
const NODE_ARGS = ['--max-semi-space-size=1', '--single-threaded'];
// Same length as a build id: replaced in the shim bundle once the id (a hash over everything a spare
// daemon and a front must agree on) is known.
const BUILD_PLACEHOLDER = '@@KYBSHIMBUILD@@';

/** Writes `file` by rename (never half-written for a reader), and only when its bytes change. */
function writeAtomic(file, data, mode = 0o644) {
  if (fs.existsSync(file) && fs.readFileSync(file).equals(Buffer.from(data))) return;
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, data, { mode });
  fs.renameSync(tmp, file);
}

function shimBuildId(bundleText) {
  const h = crypto.createHash('sha256').update(bundleText).update(process.version);
  for (const f of [addon, front]) if (fs.existsSync(f)) h.update(fs.readFileSync(f));
  return h.digest('hex').slice(0, 16);
}

for (const [name, entry] of Object.entries(entries)) {
  if (!fs.existsSync(path.join(root, entry))) continue;
  // Written by rename, like the addon: a shim starting during a build must never read half a bundle.
  const out = esbuild.buildSync({
    write: false,
    entryPoints: [path.join(root, entry)],
    outfile: path.join(dist, `${name}.cjs`),
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    external: ['*.node'],
    sourcemap: 'linked',
    legalComments: 'none',
    logLevel: 'warning',
    define: name === SHIM ? { __KYBERNATE_SHIM_BUILD__: JSON.stringify(BUILD_PLACEHOLDER) } : {},
    // The shim runs once per container group: a minified bundle is half the source V8 keeps in memory.
    // keepNames keeps class and function names (error names, logs) as written.
    ...(name === SHIM ? { minify: true, keepNames: true } : {}),
  });
  let build;
  for (const f of out.outputFiles) {
    let data = f.contents;
    if (name === SHIM && f.path.endsWith('.cjs') && fs.existsSync(front)) {
      const text = Buffer.from(data).toString('utf8');
      build = shimBuildId(text);
      data = text.split(BUILD_PLACEHOLDER).join(build);
    }
    writeAtomic(f.path, data);
  }
  if (build) {
    // The front replaces the Node launcher; its conf names this node, this bundle and the build id.
    writeAtomic(path.join(dist, `${name}.build`), `${build}\n`);
    const conf = [
      '# written by scripts/bundle.cjs: the native front (bin/containerd-shim-kybernate-v2) reads it',
      `build=${build}`,
      `node=${process.execPath}`,
      `script=${path.join(dist, `${name}.cjs`)}`,
      ...NODE_ARGS.map((a) => `arg=${a}`),
      '',
    ].join('\n');
    writeAtomic(path.join(bin, `${name}.conf`), conf);
    writeAtomic(path.join(bin, name), fs.readFileSync(front), 0o755);
    continue;
  }
  if (name === SHIM) {
    // No front built: the Node launcher below, and no conf or build id left from an earlier build.
    fs.rmSync(path.join(bin, `${name}.conf`), { force: true });
    fs.rmSync(path.join(dist, `${name}.build`), { force: true });
  }
  // The launcher names node by absolute path: containerd starts shims with its own PATH,
  // which need not contain node.
  const launcher = path.join(bin, name);
  const text = `#!${process.execPath}\n'use strict';\nrequire(${JSON.stringify(path.join(dist, `${name}.cjs`))});\n`;
  if (!fs.existsSync(launcher) || fs.readFileSync(launcher, 'utf8') !== text) {
    fs.writeFileSync(`${launcher}.tmp`, text, { mode: 0o755 });
    fs.renameSync(`${launcher}.tmp`, launcher);
  }
}
// bin/ holds CommonJS launchers without an extension.
fs.writeFileSync(path.join(bin, 'package.json'), '{"type":"commonjs"}\n');
console.log('bundled', Object.entries(entries).filter(([, e]) => fs.existsSync(path.join(root, e))).map(([n]) => n).join(', '));
