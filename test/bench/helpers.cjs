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

/**
 * The shim's timing trace (KYBERNATE_TRACE, src/shim/trace.ts; the native front writes the same lines):
 * `reader()` returns the lines appended since its previous call.
 */
function traceReader(file) {
  const fs = require('node:fs');
  let offset = 0;
  return () => {
    let text = '';
    try {
      const fd = fs.openSync(file, 'r');
      try {
        const size = fs.fstatSync(fd).size;
        const buf = Buffer.alloc(size - offset);
        fs.readSync(fd, buf, 0, buf.length, offset);
        offset = size;
        text = buf.toString('utf8');
      } finally {
        fs.closeSync(fd);
      }
    } catch {
      return [];
    }
    return text.split('\n').filter(Boolean).map((l) => JSON.parse(l));
  };
}

/**
 * Splits a container operation's wall time (ms) by its trace lines: the front (native front, plus a Node
 * one-shot when it fell back; a spare's answer is inside the front's time), the daemon's own time in Task
 * RPCs (Wait excluded: it spans the container's life), runc (and CRIU under it), and the rest, which is
 * containerd and its client.
 */
function splitWall(totalMs, lines) {
  let front = 0; let daemon = 0; let runc = 0;
  const paths = {};
  for (const l of lines) {
    if (l.c === 'front') { front += l.ms; paths[l.ev] = (paths[l.ev] ?? 0) + 1; }
    else if (l.c === 'node') front += l.ms;
    else if (l.c === 'daemon' && l.ev !== 'Wait') daemon += l.ms;
    else if (l.c === 'runc') runc += l.ms;
  }
  daemon = Math.max(0, daemon - runc);
  return { front, daemon, runc, containerd: Math.max(0, totalMs - front - daemon - runc), paths };
}

module.exports = { loadHelpers, median, REPO, traceReader, splitWall };
