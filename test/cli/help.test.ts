// `--help` and `-h` after any command print that command's usage on stdout and exit 0; the top-level
// usage describes every command.
import { beforeAll, describe, expect, it } from 'vitest';
import { bundle, kybernate } from './helpers';

beforeAll(() => bundle(), 120_000);

const COMMANDS = [
  ['doctor'], ['process'], ['process', 'checkpoint'], ['process', 'restore'], ['ps'], ['suspend'], ['resume'], ['gpu-status'],
  ['checkpoint'], ['restore'], ['snapshots'], ['snapshots', 'ls'], ['snapshots', 'rm'], ['version'],
];

describe('kybernate help', () => {
  for (const cmd of COMMANDS) {
    for (const flag of ['--help', '-h']) {
      it(`${cmd.join(' ')} ${flag} prints its usage and exits 0`, async () => {
        const r = await kybernate([...cmd, flag]);
        expect(r.stderr).toBe('');
        expect(r.code).toBe(0);
        expect(r.stdout.startsWith(`usage: kybernate ${cmd.join(' ')}`)).toBe(true);
        expect(r.stdout).not.toMatch(/unknown option/i);
      });
    }
  }

  it('--help wins over other arguments, also ones that would be wrong', async () => {
    for (const args of [['process', 'checkpoint', '--pid', 'x', '--help'], ['doctor', '--bogus', '-h'], ['suspend', 'a', 'b', '--help'],
      ['snapshots', 'rm', '--help'], ['checkpoint', '--bogus', '-h']]) {
      const r = await kybernate(args);
      expect(r.code, args.join(' ')).toBe(0);
      expect(r.stdout).toMatch(/^usage: kybernate /);
    }
  });

  it('a subcommand\'s usage explains each of its options', async () => {
    const r = await kybernate(['process', 'checkpoint', '--help']);
    for (const opt of ['--pid', '--images', '--leave-running', '--tcp-established', '--shell-job', '--ext-unix-sk', '--file-locks', '--timeout', '--json']) {
      // The option, its argument if it takes one, then at least two spaces and the explanation.
      expect(r.stdout).toMatch(new RegExp(`^ {2}${opt}(?: [A-Z]+)? {2,}\\w`, 'm'));
    }
  });

  it('the top-level usage describes every command, the subcommands of process and snapshots included', async () => {
    const r = await kybernate(['--help']);
    expect(r.code).toBe(0);
    const lines = r.stdout.split('\n');
    for (const cmd of ['doctor', 'process checkpoint', 'process restore', 'ps', 'suspend', 'resume', 'gpu-status', 'checkpoint', 'restore',
      'snapshots ls', 'snapshots rm', 'version']) {
      const at = lines.findIndex((l) => l.startsWith(`  ${cmd} `) || l === `  ${cmd}`);
      expect(at, cmd).toBeGreaterThan(0);
      // The synopsis may wrap onto lines indented deeper; the description follows, indented by 6.
      const desc = lines.slice(at + 1).find((l) => !/^ {7,}/.test(l));
      expect(desc, cmd).toMatch(/^ {6}\w/);
    }
  });
});
