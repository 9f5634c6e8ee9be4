// The CRIU gate's script as CRIU runs it (CRTOOLS_SCRIPT_ACTION in the environment, from the path in
// criu.conf), and the spec and configuration files the gate keeps.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CRIU_CONFIG_ANNOTATION, CriuGate } from '../../src/shim/criu-gate';

const roots: string[] = [];
afterEach(() => { for (const r of roots.splice(0)) rmSync(r, { recursive: true, force: true }); });

function bundle(annotations: Record<string, string> = {}): string {
  const b = mkdtempSync(join(tmpdir(), 'kyb-gate-'));
  roots.push(b);
  writeFileSync(join(b, 'config.json'), JSON.stringify({ ociVersion: '1.0.2', process: {}, annotations }));
  return b;
}
const spec = (b: string) => JSON.parse(readFileSync(join(b, 'config.json'), 'utf8')) as { annotations: Record<string, string> };

/** Runs the script named in criu.conf as CRIU would at `action`; resolves to its exit code. */
function runScript(b: string, action: string): { exited: Promise<number> } {
  const conf = readFileSync(join(b, 'criu-gate', 'criu.conf'), 'utf8');
  const script = /^action-script (\S+)$/m.exec(conf)![1]!;
  const child = spawn(script, [], { env: { ...process.env, CRTOOLS_SCRIPT_ACTION: action }, stdio: 'ignore' });
  return { exited: new Promise((r) => child.on('exit', (code) => r(code ?? -1))) };
}

describe('CriuGate', () => {
  it('points the spec at its configuration, which exists only while armed', () => {
    const b = bundle();
    const gate = CriuGate.prepare(b)!;
    expect(spec(b).annotations[CRIU_CONFIG_ANNOTATION]).toBe(join(b, 'criu-gate', 'criu.conf'));
    expect(existsSync(join(b, 'criu-gate', 'criu.conf'))).toBe(false);
    expect(CriuGate.of(b, spec(b).annotations)).toBeDefined();
    expect(CriuGate.of(b, {})).toBeUndefined();
    gate.arm('post-dump');
    expect(readFileSync(join(b, 'criu-gate', 'criu.conf'), 'utf8')).toMatch(/^action-script \//m);
    gate.disarm();
    expect(existsSync(join(b, 'criu-gate', 'criu.conf'))).toBe(false);
  });

  it('holds the armed stage until the verdict: ok lets CRIU go on, anything else fails the stage', async () => {
    const b = bundle();
    const gate = CriuGate.prepare(b)!;
    gate.arm('post-restore');
    const held = runScript(b, 'post-restore');
    await gate.waitReached('post-restore', held.exited);
    expect(gate.reached('post-restore')).toBe(true);
    let done = false;
    void held.exited.then(() => { done = true; });
    await new Promise((r) => setTimeout(r, 100));
    expect(done).toBe(false);
    gate.open('post-restore', true);
    expect(await held.exited).toBe(0);

    gate.arm('post-dump');
    const refused = runScript(b, 'post-dump');
    await gate.waitReached('post-dump', refused.exited);
    gate.open('post-dump', false);
    expect(await refused.exited).not.toBe(0);
  });

  it('lets other stages and unarmed stages through at once', async () => {
    const b = bundle();
    const gate = CriuGate.prepare(b)!;
    gate.arm('post-dump');
    expect(await runScript(b, 'pre-dump').exited).toBe(0);
    expect(await runScript(b, 'post-restore').exited).toBe(0);
    expect(gate.reached('post-restore')).toBe(false);
  });

  it('fails the stage when the shim that armed it is gone', async () => {
    const b = bundle();
    const gate = CriuGate.prepare(b)!;
    gate.arm('post-dump');
    // A pid that is not running: what the script finds after the shim was killed.
    writeFileSync(join(b, 'criu-gate', 'armed-post-dump'), '2147483646');
    expect(await runScript(b, 'post-dump').exited).not.toBe(0);
  });

  it("keeps the container's own CRIU configuration: its lines first while armed, alone while disarmed", () => {
    const own = join(bundle(), 'own.conf');
    writeFileSync(own, 'tcp-close');
    const b = bundle({ [CRIU_CONFIG_ANNOTATION]: own });
    const gate = CriuGate.prepare(b)!;
    expect(spec(b).annotations[CRIU_CONFIG_ANNOTATION]).toBe(join(b, 'criu-gate', 'criu.conf'));
    expect(readFileSync(join(b, 'criu-gate', 'criu.conf'), 'utf8')).toBe('tcp-close\n');
    gate.arm('post-restore');
    expect(readFileSync(join(b, 'criu-gate', 'criu.conf'), 'utf8')).toMatch(/^tcp-close\naction-script \//);
    // A second prepare (restore of a restored container) keeps what the first one inherited.
    CriuGate.prepare(b);
    expect(readFileSync(join(b, 'criu-gate', 'criu.conf'), 'utf8')).toBe('tcp-close\n');
  });

  it('refuses a bundle path CRIU configuration cannot carry', () => {
    const b = join(bundle(), 'with space');
    mkdirSync(b);
    writeFileSync(join(b, 'config.json'), JSON.stringify({ ociVersion: '1.0.2', process: {} }));
    expect(CriuGate.prepare(b)).toBeUndefined();
    expect(spec(b).annotations).toBeUndefined();
  });
});
