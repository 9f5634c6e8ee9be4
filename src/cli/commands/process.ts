// `kybernate process checkpoint|restore`: the manual checkpoint of one process tree, with its GPU state.
import { parseArgs } from 'node:util';
import type { Step, StepError } from '../../criu/process';
import { UsageError } from '../usage-error';

const FLAGS = {
  'tcp-established': { type: 'boolean' },
  'shell-job': { type: 'boolean' },
  'ext-unix-sk': { type: 'boolean' },
  'file-locks': { type: 'boolean' },
  timeout: { type: 'string' },
  images: { type: 'string' },
  json: { type: 'boolean' },
} as const;

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

function stepLines(steps: readonly Step[]): string {
  // A GPU step runs once per process of the tree: its line names the process.
  const label = (s: Step) => (s.pid === undefined ? s.step : `${s.step}:${s.pid}`);
  const width = Math.max(16, ...steps.map((s) => label(s).length));
  return steps
    .map((s) => `  ${label(s).padEnd(width)} ${s.ms.toFixed(1).padStart(10)} ms${s.bytes !== undefined ? `  ${formatBytes(s.bytes)}` : ''}`)
    .join('\n');
}

function timeoutMs(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const s = Number(v);
  if (!Number.isFinite(s) || s <= 0) throw new UsageError(`--timeout must be a positive number of seconds, not ${v}`);
  return Math.round(s * 1000);
}

/** The CRIU flags checkpoint and restore share (a restore must repeat what the dump was given). */
function criuFlags(values: { 'tcp-established'?: boolean; 'shell-job'?: boolean; 'ext-unix-sk'?: boolean; 'file-locks'?: boolean; timeout?: string }) {
  return {
    tcpEstablished: values['tcp-established'],
    shellJob: values['shell-job'],
    extUnixSk: values['ext-unix-sk'],
    fileLocks: values['file-locks'],
    criuTimeoutMs: timeoutMs(values.timeout),
  };
}

function report(err: unknown, json: boolean): number {
  const e = err as StepError & { cause?: { logErrors?: string[]; logFile?: string } };
  if (json) {
    process.stdout.write(`${JSON.stringify({
      ok: false,
      step: e.step,
      error: e.message,
      diagnosis: e.diagnosis?.code ?? null,
      processRunning: e.processRunning,
      steps: e.steps ?? [],
      criuLog: e.cause?.logErrors ?? [],
      logFile: e.cause?.logFile,
    }, null, 2)}\n`);
    return 1;
  }
  const lines = [`kybernate: ${e.message}`];
  if (e.steps?.length) lines.push('steps done:', stepLines(e.steps));
  const log = e.cause?.logErrors ?? [];
  if (log.length > 0) lines.push('CRIU:', ...log.map((l) => `  ${l}`));
  if (e.cause?.logFile) lines.push(`CRIU log: ${e.cause.logFile}`);
  process.stderr.write(`${lines.join('\n')}\n`);
  return 1;
}

async function checkpoint(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { ...FLAGS, pid: { type: 'string' }, 'leave-running': { type: 'boolean' } },
    strict: true,
  });
  const pid = Number(values.pid);
  if (values.pid === undefined || !Number.isInteger(pid) || pid <= 0) throw new UsageError('--pid P is required (a positive integer)');
  if (!values.images) throw new UsageError('--images DIR is required');
  const { checkpointProcess, StepError } = await import('../../criu/process');
  const json = values.json ?? false;
  try {
    const r = await checkpointProcess({
      pid,
      imagesDir: values.images,
      leaveRunning: values['leave-running'],
      ...criuFlags(values),
    });
    if (json) {
      process.stdout.write(`${JSON.stringify({ ok: true, pid, imagesDir: r.imagesDir, cuda: r.cuda, cudaSkipped: r.cudaSkipped, bytes: r.bytes, steps: r.steps }, null, 2)}\n`);
      return 0;
    }
    const total = r.steps.reduce((n, s) => n + s.ms, 0);
    process.stdout.write(
      `checkpointed pid ${pid} to ${r.imagesDir} (${formatBytes(r.bytes)}, ${total.toFixed(1)} ms)\n` +
        `${r.cuda ? 'GPU state: checkpointed' : `GPU state: none (${r.cudaSkipped ?? 'skipped'})`}\n` +
        `${stepLines(r.steps)}\n` +
        `${values['leave-running'] ? `the process keeps running\n` : ''}`,
    );
    return 0;
  } catch (err) {
    if (err instanceof StepError) return report(err, json);
    throw err;
  }
}

async function restore(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: FLAGS, strict: true });
  if (!values.images) throw new UsageError('--images DIR is required');
  const { restoreProcess, StepError } = await import('../../criu/process');
  const json = values.json ?? false;
  try {
    const r = await restoreProcess({
      imagesDir: values.images,
      ...criuFlags(values),
    });
    if (json) {
      process.stdout.write(`${JSON.stringify({ ok: true, pid: r.pid, cuda: r.cuda, steps: r.steps }, null, 2)}\n`);
      return 0;
    }
    process.stdout.write(`restored pid ${r.pid} from ${values.images}${r.cuda ? ' with its GPU state' : ''}\n${stepLines(r.steps)}\n`);
    return 0;
  } catch (err) {
    if (err instanceof StepError) return report(err, json);
    throw err;
  }
}

export async function processCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === 'checkpoint') return checkpoint(rest);
  if (sub === 'restore') return restore(rest);
  throw new UsageError(sub === undefined ? 'process: checkpoint or restore?' : `process: unknown subcommand ${sub}`);
}
