// The import graph of src/, as madge sees it: no loops, and the layering between the binaries and the
// code they share. Static imports, re-exports, `import type`, `typeof import('…')` and dynamic `import()`
// all count (detective-typescript sees dynamic imports unless skipAsyncImports is set; it is set false
// here on purpose), as do require() calls in .ts files (mixedImports).
//
// src/gen is generated: the graph reaches it through its .d.ts files (TypeScript resolution prefers
// gen/proto.d.ts to gen/proto.js, and only *.ts files are walked), so the generated JavaScript itself is
// never parsed; gen counts as a shared folder. Run `make gen` first: an unresolved import fails below.
import path from 'node:path';
import madge from 'madge';
import { beforeAll, describe, expect, it } from 'vitest';

const root = path.resolve(__dirname, '..', '..');
const srcDir = path.join(root, 'src');

/** One folder per binary. activator and controller do not exist yet; the rules hold for them too. */
const BINARIES = ['shim', 'cli', 'agent', 'activator', 'controller'];
/** Code the binaries share; '' stands for the files directly in src/ (errors.ts, ids.ts, …). */
const SHARED = ['', 'gpu', 'snapshot', 'host', 'criu', 'shim-client', 'containerd', 'agent-api', 'activator-api', 'native', 'ttrpc', 'gen', 'network', 'storage'];

/** 'cli/commands/run.ts' → 'cli'; 'errors.ts' → ''. */
const folderOf = (file: string): string => (file.includes('/') ? file.slice(0, file.indexOf('/')) : '');

describe('import graph of src/', () => {
  let graph: Record<string, string[]>;
  let circular: string[][];
  let skipped: string[];
  let edges: Array<[from: string, to: string]>;

  beforeAll(async () => {
    const res = await madge(srcDir, {
      baseDir: srcDir,
      fileExtensions: ['ts'],
      tsConfig: path.join(root, 'tsconfig.json'),
      detectiveOptions: { ts: { skipAsyncImports: false, skipTypeImports: false, mixedImports: true } },
    });
    graph = res.obj();
    circular = res.circular();
    skipped = res.warnings().skipped;
    edges = Object.entries(graph).flatMap(([from, deps]) => deps.map((to): [string, string] => [from, to]));
  });

  const crossing = (from: (folder: string) => boolean, to: (folder: string) => boolean): string[] =>
    edges.filter(([a, b]) => from(folderOf(a)) && to(folderOf(b)) && folderOf(a) !== folderOf(b)).map(([a, b]) => `${a} -> ${b}`);

  it('sees the whole of src/ (every import resolved)', () => {
    expect(Object.keys(graph).length).toBeGreaterThan(50);
    expect(graph['cli/run.ts'], 'dynamic import() edges are in the graph').toContain('cli/commands/doctor.ts');
    expect(skipped, `imports madge could not resolve (src/gen missing? run \`make gen\`):\n${skipped.join('\n')}`).toEqual([]);
  });

  it('has no circular imports', () => {
    const loops = circular.map((c) => [...c, c[0]].join(' > '));
    expect(loops, `circular imports:\n${loops.join('\n')}`).toEqual([]);
  });

  it('puts every folder of src/ in BINARIES or SHARED', () => {
    const unknown = [...new Set(Object.keys(graph).map(folderOf))].filter((f) => !BINARIES.includes(f) && !SHARED.includes(f));
    expect(unknown, `classify these folders in ${path.relative(root, __filename)}`).toEqual([]);
  });

  it('never has one binary import another', () => {
    const bad = crossing((f) => BINARIES.includes(f), (f) => BINARIES.includes(f));
    expect(bad, `imports between binary folders:\n${bad.join('\n')}`).toEqual([]);
  });

  it('never has shared code import a binary', () => {
    const bad = crossing((f) => SHARED.includes(f), (f) => BINARIES.includes(f));
    expect(bad, `shared code importing a binary folder:\n${bad.join('\n')}`).toEqual([]);
  });
});
