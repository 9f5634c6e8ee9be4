// The native front's readers of start's inputs, against the JS shim's: config.json (the group must be
// the one JSON.parse + groupOf give for any valid document; where the front cannot be sure, e.g.
// escapes in the group value or anything malformed, it must delegate and never print another address)
// and stdin (containerd 2.3's BootstrapParams for this container must always reach the JS shim, as
// protobufjs decides). Node's fallback is /usr/bin/true here (fast); the path taken is read from the
// front's KYBERNATE_TRACE line.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { containerd } from '../../src/gen/actions';
import { GROUP_ANNOTATIONS, groupOf, socketAddress } from '../../src/shim/address';
import { prng } from '../e2e/support/prng';

const FRONT = path.resolve(__dirname, '../../build/Release/kybernate-shim-front');
const NS = 'kyb-front-json';
const isRoot = process.getuid?.() === 0;
const skip = !fs.existsSync(FRONT) ? 'build/Release/kybernate-shim-front not built (run npx node-gyp build)'
  : !isRoot ? 'needs root (listens under /run/containerd/s)' : !fs.existsSync('/usr/bin/true') ? 'no /usr/bin/true' : '';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kyb-front-json-'));
const bin = path.join(dir, 'containerd-shim-kybernate-v2');
const bundle = path.join(dir, 'bundle');
const trace = path.join(dir, 'trace.jsonl');
const ADDRESS = path.join(dir, 'containerd.sock'); // unique: no real containerd socket can collide
if (!skip) {
  fs.copyFileSync(FRONT, bin);
  fs.writeFileSync(`${bin}.conf`, 'build=0123abcd\nnode=/usr/bin/true\nscript=/nonexistent.cjs\n');
  fs.mkdirSync(bundle);
}
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const servers: net.Server[] = [];
afterEach(async () => { await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r)))); });

/** Stand-in group daemons at these addresses (deduplicated), until the test ends. */
async function listen(...addresses: string[]): Promise<void> {
  for (const a of new Set(addresses)) {
    const server = net.createServer((c) => c.destroy());
    await new Promise<void>((res, rej) => { server.once('error', rej); server.listen(a.slice('unix://'.length), () => res()); });
    servers.push(server);
  }
}

/** Runs `start` for `id` on `config` (raw text; undefined: none; null: keep) and stdin; answer and path. */
function start(id: string, config: string | Buffer | undefined | null, stdin?: Buffer): Promise<{ code: number | null; signal: string | null; out: string; ev: string }> {
  const cfg = path.join(bundle, 'config.json');
  if (config === undefined) fs.rmSync(cfg, { force: true }); else if (config !== null) fs.writeFileSync(cfg, config);
  fs.rmSync(trace, { force: true });
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', KYBERNATE_SHIM_SPARE: '0', KYBERNATE_TRACE: trace };
  return new Promise((resolve) => {
    const child = spawn(bin, ['-namespace', NS, '-address', ADDRESS, '-id', id, 'start'], { cwd: bundle, env, stdio: ['pipe', 'pipe', 'inherit'] });
    child.stdin.on('error', () => undefined);
    child.stdin.end(stdin);
    const out: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.on('close', (code, signal) => {
      const ev = fs.existsSync(trace) ? (JSON.parse(fs.readFileSync(trace, 'utf8')) as { ev: string }).ev : '';
      resolve({ code, signal, out: Buffer.concat(out).toString(), ev });
    });
  });
}

/** What the JS shim would answer for this document, or undefined where it would fail. */
function tsAddress(id: string, config: string): string | undefined {
  try {
    const group = groupOf(id, (JSON.parse(config) as { annotations?: Record<string, string> }).annotations);
    return socketAddress(ADDRESS, NS, group);
  } catch {
    return undefined;
  }
}

// ---- a seeded generator of OCI-config-like documents, written out by hand: random whitespace, random
// escapes (\uXXXX in either case, \/, surrogate pairs), raw unicode, duplicate keys, decoys ----
const CHARS = ['a', 'b', 'z', 'Q', '0', '9', '-', '_', '.', ' ', '"', '\\', '/', '\n', '\t', '\u0001', 'é', '日', '😀', '\u2028', '{', '}', ',', ':', '[', ']'];
const GROUP_CHARS = ['a', 'b', 'c', '0', '7', '-', '_', '.', '/', 'é', 'ß', '日', '😀', ':', '@'];
const DECOY_KEYS = ['annotations', ...GROUP_ANNOTATIONS, 'process', 'root', 'linux', 'hostname', 'mounts', 'env'];

interface Doc { text: string; rawGroup: Map<string, string> } // raw (as written) last value per group key
function generator(seed: number) {
  const rand = prng(seed);
  const int = (n: number) => Math.floor(rand() * n);
  const pick = <T>(a: readonly T[]): T => a[int(a.length)];
  const ws = () => pick(['', '', '', ' ', '\n  ', '\t', '\r\n']);
  const hex4 = (n: number) => { const h = n.toString(16).padStart(4, '0'); return rand() < 0.5 ? h : h.toUpperCase(); };
  function str(s: string, escapes = 0.1): string {
    let o = '"';
    for (const ch of s) {
      const cp = ch.codePointAt(0)!;
      if (ch === '"' || ch === '\\') o += `\\${ch}`;
      else if (cp < 0x20) o += pick([`\\u${hex4(cp)}`, ({ '\n': '\\n', '\t': '\\t' } as Record<string, string>)[ch] ?? `\\u${hex4(cp)}`]);
      else if (rand() < escapes) o += cp > 0xffff ? ch.split('').map((u) => `\\u${hex4(u.charCodeAt(0))}`).join('') : ch === '/' ? '\\/' : `\\u${hex4(cp)}`;
      else o += ch;
    }
    return `${o}"`;
  }
  const text = (chars: readonly string[], max: number) => Array.from({ length: int(max + 1) }, () => pick(chars)).join('');
  const num = () => pick(['0', '-0', '7', '-12.5e3', '3.14159', '1E+2', '2e-7', '123456789012345678901234567890', String(int(1e6))]);
  const obj = (members: string[]) => (members.length ? `{${ws()}${members.join(`${ws()},${ws()}`)}${ws()}}` : `{${ws()}}`);
  function value(depth: number): string {
    const r = rand();
    if (depth > 4 || r < 0.5) return pick([num, () => 'true', () => 'false', () => 'null', () => str(text(CHARS, 8))])();
    if (r < 0.8) return obj(Array.from({ length: int(5) }, () => `${str(rand() < 0.4 ? pick(DECOY_KEYS) : text(CHARS, 6))}${ws()}:${ws()}${value(depth + 1)}`));
    return `[${Array.from({ length: int(4) }, () => value(depth + 1)).join(`${ws()},`)}]`;
  }
  return (): Doc => {
    const annotations = () => {
      const members: string[] = [];
      const rawGroup = new Map<string, string>();
      for (let i = int(6); i >= 0; i--) {
        if (rand() < 0.6) {
          const key = pick(GROUP_ANNOTATIONS);
          const raw = rand() < 0.2 ? '""' : str(text(GROUP_CHARS, 10) || 'g', rand() < 0.3 ? 0.2 : 0);
          rawGroup.set(key, raw); // the last duplicate wins, as in JSON.parse
          members.push(`${str(key, 0.05)}${ws()}:${ws()}${raw}`);
        } else {
          members.push(`${str(pick(['io.kubernetes.cri.container-type', 'x', text(CHARS, 5)]))}:${str(text(CHARS, 6))}`);
        }
      }
      return { text: `${str('annotations', 0.05)}${ws()}:${ws()}${obj(members)}`, rawGroup };
    };
    const members: { text: string; rawGroup?: Map<string, string> }[] = Array.from({ length: int(6) },
      () => ({ text: `${str(rand() < 0.3 ? pick(DECOY_KEYS.slice(1)) : text(CHARS, 6))}:${value(1)}` }));
    for (let n = rand() < 0.1 ? 0 : 1 + int(2); n > 0; n--) members.splice(int(members.length + 1), 0, annotations());
    const winner = members.filter((m) => m.rawGroup).at(-1); // the last "annotations" member wins
    return { text: `${ws()}${obj(members.map((m) => m.text))}${ws()}`, rawGroup: winner?.rawGroup ?? new Map() };
  };
}

describe.skipIf(!!skip)(`native front reads start's inputs like the JS shim${skip ? ` (skipped: ${skip})` : ''}`, () => {
  it('fixed documents: positions, orders, decoys, escapes elsewhere, unicode, duplicates', async () => {
    const cases: [string, string][] = [
      ['first', '{"annotations":{"io.kybernate.group":"g1"},"ociVersion":"1.0.2"}'],
      ['last', '{"ociVersion":"1.0.2","process":{"args":["sh","-c","echo \\"hi\\" \\\\ \\u0041\\n"]},"annotations":{"a":"b","io.kybernate.group":"g2"}}'],
      ['order', '{"annotations":{"io.kubernetes.cri.sandbox-id":"pod","io.containerd.runc.v2.group":"rg"}}'],
      ['empty first', '{"annotations":{"io.kybernate.group":"","io.containerd.runc.v2.group":null,"io.kubernetes.cri.sandbox-id":"pod"}}'],
      ['nested decoys', '{"process":{"annotations":{"io.kybernate.group":"no"},"io.kybernate.group":"no"},"io.kybernate.group":"no","x":[{"annotations":{"io.kybernate.group":"no"}}],"annotations":{"y":{"io.kybernate.group":"no"},"io.containerd.runc.v2.group":"yes"}}'],
      ['decoy in a string', '{"hostname":"\\"annotations\\":{\\"io.kybernate.group\\":\\"no\\"}","annotations":{}}'],
      ['unicode', '{"process":{"env":["LANG=日本語","E=😀"]},"annotations":{"io.kybernate.group":"grüppe-日本-😀"}}'],
      ['escaped key', '{"annot\\u0061tions":{"io.kybernate\\u002Egroup":"esc-key"}}'],
      ['duplicates', '{"annotations":{"io.kybernate.group":"old"},"annotations":{"io.kybernate.group":"a","io.kybernate.group":"b"}}'],
      ['null annotations', '{"annotations":null}'],
      ['no annotations', '{"ociVersion":"1.0.2","linux":{"resources":{"cpu":{"shares":1024,"quota":-1.5e3}}}}'],
      ['whitespace', ' \r\n\t{ "annotations" :\t{ "io.kybernate.group" : "ws" } }\n'],
      ['deep elsewhere', `{"x":${'['.repeat(100)}${']'.repeat(100)},"annotations":{"io.kybernate.group":"deep"}}`],
    ];
    for (const [name, config] of cases) {
      const expected = tsAddress('c1', config)!;
      await listen(expected);
      const r = await start('c1', config);
      expect(r.ev, name).toBe('start:fast');
      expect(r.out, name).toBe(expected);
      await Promise.all(servers.splice(0).map((s) => new Promise((res) => s.close(res))));
    }
  });

  it('delegates (and prints nothing) where it cannot be sure, never another address', async () => {
    const cases: [string, string | Buffer | undefined][] = [
      ['escape in the group', '{"annotations":{"io.kybernate.group":"g\\u0031"}}'],
      ['escaped slash in the group', '{"annotations":{"io.kybernate.group":"a\\/b"}}'],
      ['non-string group', '{"annotations":{"io.kybernate.group":5}}'],
      ['object group', '{"annotations":{"io.kybernate.group":{"a":"b"}}}'],
      ['array annotations', '{"annotations":["io.kybernate.group"]}'],
      ['dot segment', '{"annotations":{"io.kybernate.group":"../x"}}'],
      ['trailing slash', '{"annotations":{"io.kybernate.group":"x/"}}'],
      ['invalid UTF-8', Buffer.concat([Buffer.from('{"annotations":{"io.kybernate.group":"a'), Buffer.from([0xc3, 0x28]), Buffer.from('"}}')])],
      ['BOM', '\ufeff{"annotations":{"io.kybernate.group":"bom"}}'],
      ['top-level array', '[{"annotations":{"io.kybernate.group":"arr"}}]'],
      ['trailing comma', '{"annotations":{"io.kybernate.group":"tc"},}'],
      ['trailing garbage', '{"annotations":{"io.kybernate.group":"tg"}} x'],
      ['single quotes', "{'annotations':{'io.kybernate.group':'sq'}}"],
      ['leading zero', '{"n":01,"annotations":{"io.kybernate.group":"lz"}}'],
      ['raw control char', '{"s":"a\u0001b","annotations":{"io.kybernate.group":"cc"}}'],
      ['too deep', `{"x":${'['.repeat(300)}${']'.repeat(300)},"annotations":{"io.kybernate.group":"deep"}}`],
      ['very deep', '['.repeat(200_000)],
      ['missing', undefined],
    ];
    for (const [name, config] of cases) {
      const text = config === undefined ? '' : config.toString();
      // Daemons listen at every address a sloppy reader could compute: the raw text, the id, the TS answer.
      const raw = /"io\.kybernate\.group":"((?:[^"\\]|\\.)*)"/.exec(text)?.[1];
      await listen(socketAddress(ADDRESS, NS, 'c1'), ...(raw ? [socketAddress(ADDRESS, NS, raw), socketAddress(ADDRESS, NS, path.join(raw))] : []));
      const r = await start('c1', config);
      expect({ name, code: r.code, signal: r.signal, ev: r.ev, out: r.out }).toEqual({ name, code: 0, signal: null, ev: 'start:node', out: '' });
      await Promise.all(servers.splice(0).map((s) => new Promise((res) => s.close(res))));
    }
  });

  it('random documents: the same address as JSON.parse + groupOf, or a delegation when the group has escapes', async () => {
    const next = generator(0x6b796266);
    let fast = 0;
    for (let i = 0; i < 250; i++) {
      const doc = next();
      const id = `r${i}`;
      const parsed = JSON.parse(doc.text) as { annotations?: Record<string, string> }; // the generator writes valid JSON only
      const group = groupOf(id, parsed.annotations);
      const key = GROUP_ANNOTATIONS.find((k) => parsed.annotations?.[k]);
      const escaped = key !== undefined && doc.rawGroup.get(key)!.includes('\\');
      // The front hashes address/ns/group itself only where path.join has nothing to normalise (and,
      // to stay simple, not for a trailing '/', which path.join would keep).
      const plain = path.join(ADDRESS, NS, group) === `${ADDRESS}/${NS}/${group}` && !group.endsWith('/');
      const expected = socketAddress(ADDRESS, NS, group);
      // A reader that ignored escapes would hash the group as written: a daemon listens there too.
      await listen(expected, ...(key ? [socketAddress(ADDRESS, NS, doc.rawGroup.get(key)!.slice(1, -1))] : []));
      const r = await start(id, doc.text);
      const want = escaped || !plain ? { ev: 'start:node', out: '' } : { ev: 'start:fast', out: expected };
      expect({ i, doc: doc.text, code: r.code, ev: r.ev, out: r.out }).toEqual({ i, doc: doc.text, code: 0, ...want });
      if (r.ev === 'start:fast') fast++;
      await Promise.all(servers.splice(0).map((s) => new Promise((res) => s.close(res))));
    }
    expect(fast).toBeGreaterThan(100); // the generator must exercise the fast path, not only delegation
  });

  it('truncated and mutated documents never crash it; it answers only what JSON.parse would', async () => {
    const next = generator(0x74727563);
    const rand = prng(99);
    const MUTANTS = ['{', '}', '[', ']', '"', ',', ':', '\\', 'x', '\u0000', ' ', '0', '-', 'é'];
    for (let i = 0; i < 200; i++) {
      const original = next().text;
      const at = Math.floor(rand() * original.length);
      const mode = i % 3;
      const text = mode === 0 ? original.slice(0, at)
        : mode === 1 ? original.slice(0, at) + MUTANTS[Math.floor(rand() * MUTANTS.length)] + original.slice(at + 1)
          : original.slice(0, at) + original.slice(at + 1);
      const id = `m${i}`;
      const before = tsAddress(id, original)!;
      const now = tsAddress(id, text);
      await listen(before, ...(now ? [now] : []));
      const r = await start(id, text);
      expect({ i, text, code: r.code, signal: r.signal }).toEqual({ i, text, code: 0, signal: null });
      if (r.ev === 'start:fast') expect({ i, text, out: r.out }).toEqual({ i, text, out: now });
      else expect({ i, text, ev: r.ev, out: r.out }).toEqual({ i, text, ev: 'start:node', out: '' });
      await Promise.all(servers.splice(0).map((s) => new Promise((res) => s.close(res))));
    }
  });
  it('mutated BootstrapParams: the fast path never answers what protobufjs reads as this container\'s', async () => {
    const rand = prng(0x626f6f74);
    const int = (n: number) => Math.floor(rand() * n);
    const BP = containerd.runtime.bootstrap.v1.BootstrapParams;
    fs.writeFileSync(path.join(bundle, 'config.json'), '{}');
    await listen(socketAddress(ADDRESS, NS, 'b1'));
    let fast = 0;
    for (let i = 0; i < 300; i++) {
      let buf = Buffer.from(BP.encode({ instanceId: rand() < 0.7 ? 'b1' : 'x', namespace: rand() < 0.8 ? NS : 'y', logLevel: rand() < 0.5 ? -4 : 4,
        containerdVersion: 'v2.3.0', socketDir: rand() < 0.5 ? '/s' : undefined,
        extensions: rand() < 0.5 ? [{ value: { type_url: 'containerd.runc.v1.Options', value: new Uint8Array([10, 1, 65]) } }] : [] }).finish());
      for (let m = int(4); m > 0; m--) { // overwrite, insert or delete a byte, often a tag-like one
        const at = int(buf.length);
        const byte = rand() < 0.5 ? int(256) : [0x0a, 0x12, 0x08, 0x0b, 0x0c, 0x0f, 0x42, 0x80, 0xff, 0x02][int(10)];
        const r = rand();
        if (r < 0.4) buf[at] = byte;
        else buf = Buffer.concat([buf.subarray(0, at), ...(r < 0.7 ? [Buffer.from([byte]), buf.subarray(at)] : [buf.subarray(at + 1)])]);
      }
      let mine = false;
      try {
        const bp = BP.decode(Buffer.from(buf)); // a Buffer, as start.ts reads it (Node's BufferReader)
        mine = bp.instanceId === 'b1' && bp.namespace === NS;
      } catch {
        // legacy options for the JS shim
      }
      const r = await start('b1', null, buf);
      expect({ i, stdin: buf.toString('hex'), code: r.code, fastForBootstrap: mine && r.ev === 'start:fast' })
        .toEqual({ i, stdin: buf.toString('hex'), code: 0, fastForBootstrap: false });
      if (r.ev === 'start:fast') fast++;
    }
    expect(fast).toBeGreaterThan(30);
  });
});
