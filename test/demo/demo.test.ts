// `kybernate demo`, the README's first command, as a script runs it (no terminal on stdin): on this machine
// with nothing else running, it starts a private containerd (from what `make setup` installed), a network
// sandbox, the workload, an agent and an activator; goes through one sleep (checkpoint: the process gone)
// and one wake; prints the wake time in ms alone on its last line; exits 0; and leaves nothing behind.
import { execFile, spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { criuMissing } from '../e2e/support/checkpoint';
import { REPO_ROOT, missingReason } from '../e2e/support/harness';
import { waitFor } from '../e2e/support/ctr';

const exec = promisify(execFile);
const CLI = join(REPO_ROOT, 'bin', 'kybernate');
const lacks = missingReason('2.1') ?? criuMissing() ?? (existsSync('/usr/lib/cni/bridge') ? undefined : 'no CNI bridge plugin (containernetworking-plugins)');

async function pgrep(pattern: string): Promise<string[]> {
  try {
    return (await exec('pgrep', ['-f', pattern])).stdout.trim().split('\n').filter(Boolean);
  } catch {
    return []; // pgrep exits 1 when nothing matches
  }
}

describe.skipIf(lacks !== undefined)(`kybernate demo${lacks ? ` (skipped: ${lacks})` : ''}`, () => {
  it('without a terminal: one sleep, one wake, the wake time on the last line, exit 0, nothing left', async () => {
    const { stdout } = await exec(CLI, ['demo', '--idle', '1'], { timeout: 240_000 });
    const lines = stdout.trimEnd().split('\n');
    expect(lines.at(-1)).toMatch(/^\d+$/);
    const wakeMs = Number(lines.at(-1));
    expect(wakeMs).toBeGreaterThan(0);
    // The story: a request answered, asleep with the process gone, the waking request answered by the same
    // process (the token drawn at its start), the wake's steps.
    const answers = lines.filter((l) => l.startsWith('request '));
    expect(answers).toHaveLength(2);
    const token = (l: string): string => /token=([0-9a-f-]+)/.exec(l)![1]!;
    expect(token(answers[1]!)).toBe(token(answers[0]!));
    expect(answers[1]).toMatch(/→ 200 .* \(it waited \d+ ms for the wake\)/);
    expect(stdout).toMatch(/asleep {6}checkpoint in \d+ ms: process \d+ is gone, .* the agent says CHECKPOINTED/);
    expect(stdout).toMatch(/wake {8}\d+ ms from checkpoint:\n {14}agent-get/);
    expect(stdout).toMatch(/ restore\/start +\d+ ms/);

    // Nothing left: the demo's containerd, agent, activator and shims are gone, and so are its network
    // namespace and its snapshots.
    expect(await pgrep('/run/kybernate-demo/')).toEqual([]);
    expect(await pgrep('-namespace kybernate-demo ')).toEqual([]);
    expect(existsSync('/run/netns/kybernate-demo')).toBe(false);
    expect(existsSync('/var/lib/kybernate-demo/snapshots')).toBe(false);
    expect(readdirSync('/run/kybernate-demo').filter((f) => f !== 'containerd')).toEqual([]);
  }, 300_000);

  it('Ctrl-C (SIGINT) while it runs: it cleans up and exits 130', async () => {
    const child = spawn(CLI, ['demo', '--idle', '30'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    await waitFor('the demo to reach its idle wait', () => out.includes('idle        no requests'), 120_000);
    child.kill('SIGINT');
    expect(await exited).toBe(130);
    expect(await pgrep('/run/kybernate-demo/')).toEqual([]);
    expect(await pgrep('-namespace kybernate-demo ')).toEqual([]);
    expect(existsSync('/run/netns/kybernate-demo')).toBe(false);
  }, 180_000);

  it('a wrong option: usage, exit 2', async () => {
    const r = await exec(CLI, ['demo', '--idle', 'soon']).catch((e: { code: number; stderr: string }) => e);
    expect(r).toMatchObject({ code: 2 });
    expect((r as { stderr: string }).stderr).toMatch(/--idle must be seconds/);
  });
});
