// `kybernate demo`: scale to zero on this host (src/cli/demo/run.ts). Without a terminal on stdin, or with
// --once, it goes through one sleep and one wake and prints the wake's time in ms, alone, on its last line.
import { parseArgs } from 'node:util';
import { runDemo } from '../demo/run';
import { EXIT } from '../exit-codes';
import { UsageError } from '../usage-error';

export async function demoCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      once: { type: 'boolean' }, idle: { type: 'string' }, sleep: { type: 'string' }, keep: { type: 'boolean' },
      rounds: { type: 'string' }, json: { type: 'boolean' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length > 0) throw new UsageError(`demo: takes no arguments, got ${positionals.join(' ')}`);
  const idleS = values.idle === undefined ? 3 : Number(values.idle);
  if (!Number.isFinite(idleS) || idleS <= 0 || idleS > 3600) throw new UsageError(`demo: --idle must be seconds between 0 and 3600, not ${values.idle}`);
  const sleep = values.sleep ?? 'checkpoint';
  if (sleep !== 'checkpoint' && sleep !== 'suspend') throw new UsageError(`demo: --sleep is checkpoint or suspend, not ${sleep}`);
  const rounds = values.rounds === undefined ? 1 : Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 100) throw new UsageError(`demo: --rounds must be 1 to 100, not ${values.rounds}`);
  const once = values.once === true || values.rounds !== undefined || values.json === true || process.stdin.isTTY !== true;
  // With --json the story goes to stderr and stdout holds one JSON document.
  const say = values.json ? (l: string): void => { process.stderr.write(`${l}\n`); } : (l: string): void => { process.stdout.write(`${l}\n`); };
  const ac = new AbortController();
  const onSignal = (): void => {
    process.stderr.write('\ninterrupted: cleaning up …\n');
    ac.abort();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const result = await runDemo({ once, rounds, idleS, sleep, keep: values.keep === true, out: say }, ac.signal);
    if (ac.signal.aborted) return 130;
    if (values.json) {
      process.stdout.write(`${JSON.stringify({ ok: true, sleep, rounds: result }, null, 2)}\n`);
      return EXIT.OK;
    }
    const last = result.at(-1)?.clientMs ?? 0;
    process.stdout.write(`\nwake time, ms (the request that woke the workload, as its client saw it):\n${last}\n`);
    return EXIT.OK;
  } catch (err) {
    if (ac.signal.aborted) return 130;
    const message = err instanceof Error ? err.message : String(err);
    if (values.json) process.stdout.write(`${JSON.stringify({ ok: false, code: (err as { code?: string }).code ?? 'KYB_ERR_INTERNAL', message })}\n`);
    process.stderr.write(`kybernate demo: ${message}\n`);
    return EXIT.FAILED;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
