#!/usr/bin/env node
// Bundles the TypeScript entry points into dist/*.cjs with esbuild and writes the launchers in bin/.
// One bundled file per binary keeps `start` cheap: node parses one file, and heavy modules are
// loaded lazily through dynamic import() (esbuild keeps those lazy inside the bundle).
'use strict';
const esbuild = require('esbuild');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..');
const dist = path.join(root, 'dist');
const bin = path.join(root, 'bin');
const entries = {
  'containerd-shim-kybernate-v2': 'src/shim/main.ts',
  kybernate: 'src/cli/main.ts',
};

fs.mkdirSync(dist, { recursive: true });
fs.mkdirSync(bin, { recursive: true });
const addon = path.join(root, 'build', 'Release', 'kybernate.node');
if (fs.existsSync(addon)) fs.copyFileSync(addon, path.join(dist, 'kybernate.node'));

for (const [name, entry] of Object.entries(entries)) {
  if (!fs.existsSync(path.join(root, entry))) continue;
  esbuild.buildSync({
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
  // The launcher names node by absolute path: containerd starts shims with its own PATH,
  // which need not contain node.
  const launcher = path.join(bin, name);
  fs.writeFileSync(launcher,
    `#!${process.execPath}\n'use strict';\nrequire(${JSON.stringify(path.join(dist, `${name}.cjs`))});\n`,
    { mode: 0o755 });
}
// bin/ holds CommonJS launchers without an extension.
fs.writeFileSync(path.join(bin, 'package.json'), '{"type":"commonjs"}\n');
console.log('bundled', Object.entries(entries).filter(([, e]) => fs.existsSync(path.join(root, e))).map(([n]) => n).join(', '));
