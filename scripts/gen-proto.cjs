#!/usr/bin/env node
// Generates src/gen/proto.{js,d.ts} from every .proto under proto/ with protobufjs-cli.
// The output is a build artefact (git-ignored) and is never edited by hand.
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const protoDir = path.join(root, 'proto');
const outDir = path.join(root, 'src', 'gen');

function walk(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return walk(p);
    return e.name.endsWith('.proto') ? [path.relative(protoDir, p)] : [];
  });
}

// The one-shot shim actions (`start` with 2.3 BootstrapParams, `delete`, `-info`) run on every
// container start and stop; they load a small module of just their messages instead of all of them.
const ACTION_FILES = [
  'containerd/runtime/bootstrap/v1/bootstrap.proto',
  'containerd/types/introspection.proto',
  'containerd/task/v2/delete_response.proto',
];

const bin = (name) => path.join(root, 'node_modules', '.bin', name);
function generate(name, files) {
  const js = path.join(outDir, `${name}.js`);
  execFileSync(bin('pbjs'), [
    // Each module gets its own protobuf.roots entry: with the shared default root, loading both would
    // let the second replace the first's namespaces.
    '-t', 'static-module', '-w', 'commonjs', '-r', `kybernate_${name}`, '--force-long', '--no-beautify',
    '--no-delimited', '--no-verify', '--no-convert', '--no-service',
    '-p', protoDir, '-o', js, ...files.map((f) => path.join(protoDir, f)),
  ], { cwd: protoDir, stdio: 'inherit' });
  execFileSync(bin('pbts'), ['--no-comments', '-o', path.join(outDir, `${name}.d.ts`), js], { stdio: 'inherit' });
  console.log(`generated ${path.relative(root, js)} from ${files.length} proto files`);
}

fs.mkdirSync(outDir, { recursive: true });
// Kubernetes' CRI messages (for the tests that play kubelet) and containerd's Content service (for the
// tests that store blobs) are test-only: kept out of the module the shim bundles (it parses every message
// type at start-up).
const TEST_ONLY = (f) => f.startsWith('k8s/') || f.startsWith('containerd/services/content/');
generate('proto', walk(protoDir).filter((f) => !TEST_ONLY(f)).sort());
generate('cri', walk(protoDir).filter(TEST_ONLY).sort());
generate('actions', ACTION_FILES);
