// What the benchmarks share: the TypeScript containerd harness and e2e helpers, bundled in memory with
// esbuild, and small statistics.
'use strict';

const path = require('node:path');
const Module = require('node:module');

const REPO = path.resolve(__dirname, '..', '..');

/** The harness (test/harness/containerd.ts) and `extra` re-exports from the e2e support. */
function loadHelpers(extra = "export { shimProcesses, tasks, waitFor, removeContainer } from './e2e/support/ctr';\n") {
  const esbuild = require('esbuild');
  const result = esbuild.buildSync({
    stdin: {
      contents: `export * from './harness/containerd';\n${extra}`,
      resolveDir: path.join(REPO, 'test'),
      sourcefile: 'bench-entry.ts',
      loader: 'ts',
    },
    bundle: true, platform: 'node', format: 'cjs', target: 'node20', write: false,
    external: ['esbuild', 'vitest'], logLevel: 'warning',
  });
  // Compiled as if it lived in test/harness/, so the harness finds the repository root from __dirname.
  const filename = path.join(REPO, 'test', 'harness', 'bench-bundle.cjs');
  const m = new Module(filename, module);
  m.filename = filename;
  m.paths = Module._nodeModulePaths(path.dirname(filename));
  m._compile(result.outputFiles[0].text, filename);
  return m.exports;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

module.exports = { loadHelpers, median, REPO };
