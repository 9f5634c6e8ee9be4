#!/usr/bin/env node
// Generates src/gen/proto.{js,d.ts} from every .proto under proto/ with protobufjs-cli.
// The output is a build artefact (git-ignored) and is never edited by hand.
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..');
const protoDir = path.join(root, 'proto');
const outDir = path.join(root, 'src', 'gen');

function walk(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return walk(p);
    return e.name.endsWith('.proto') ? [path.relative(protoDir, p)] : [];
  });
}

const files = walk(protoDir).sort();
fs.mkdirSync(outDir, { recursive: true });
const bin = (name) => path.join(root, 'node_modules', '.bin', name);
const js = path.join(outDir, 'proto.js');
execFileSync(bin('pbjs'), [
  '-t', 'static-module', '-w', 'commonjs', '--force-long', '--no-beautify',
  '--no-delimited', '--no-verify', '--no-convert', '--no-service',
  '-p', protoDir, '-o', js, ...files.map((f) => path.join(protoDir, f)),
], { cwd: protoDir, stdio: 'inherit' });
execFileSync(bin('pbts'), ['--no-comments', '-o', path.join(outDir, 'proto.d.ts'), js], { stdio: 'inherit' });
console.log(`generated ${path.relative(root, js)} from ${files.length} proto files`);
