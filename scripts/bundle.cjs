#!/usr/bin/env node
// Bundles the TypeScript entry points into dist/*.cjs with esbuild and writes the launchers in bin/.
// One bundled file per binary keeps `start` cheap: node parses one file, and heavy modules are
// loaded lazily through dynamic import() (esbuild keeps those lazy inside the bundle).
'use strict';
const esbuild = require('esbuild');
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
  });
  for (const f of out.outputFiles) {
    const tmp = `${f.path}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, f.contents);
    fs.renameSync(tmp, f.path);
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
