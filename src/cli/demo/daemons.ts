// The demo's own agent and activator: the launchers beside the CLI's (bin/), started as child processes
// with config files of the demo's (so /etc/kybernate is never read and no running agent or activator is
// touched), ready once they log `listening`; stop() is SIGTERM, then SIGKILL after a grace period.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { KybernateError } from '../../errors';
import { isExecutable, shimBinDir } from './paths';

const READY_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 5_000;

export interface Daemon {
  pid: number;
  /** The `listening` log line's fields. */
  ready: Record<string, unknown>;
  /** Its output so far (the last 64 KiB), for an error report. */
  output(): string;
  stop(): Promise<void>;
}

/** The launcher of one of our binaries, beside the shim's (bin/ of the checkout, or <prefix>/bin). */
export function launcher(name: 'kybernate-agent' | 'kybernate-activator'): string {
  const dir = shimBinDir();
  const file = dir === undefined ? undefined : path.join(dir, name);
  if (file === undefined || !isExecutable(file)) {
    throw new KybernateError('KYB_ERR_FAILED_PRECONDITION', `${name} not found beside the kybernate CLI: run \`make build\` (or \`make install\`)`);
  }
  return file;
}

export function startDaemon(name: 'kybernate-agent' | 'kybernate-activator', args: string[]): Promise<Daemon> {
  const child: ChildProcess = spawn(launcher(name), args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (d: Buffer): void => { out = (out + d.toString()).slice(-65536); };
  child.stderr!.on('data', keep);
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
    await exited;
    clearTimeout(t);
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      void stop();
      reject(new KybernateError('KYB_ERR_DEADLINE', `${name} did not start in ${READY_TIMEOUT_MS / 1000} s:\n${out.trim()}`));
    }, READY_TIMEOUT_MS);
    child.stdout!.on('data', (d: Buffer) => {
      const first = !out.includes('"msg":"listening"');
      keep(d);
      const line = out.split('\n').find((l) => l.includes('"msg":"listening"'));
      if (!line || !first) return;
      clearTimeout(timer);
      resolve({ pid: child.pid!, ready: JSON.parse(line) as Record<string, unknown>, output: () => out, stop });
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new KybernateError('KYB_ERR_RUNTIME', `${name} exited ${code} before it listened:\n${out.trim()}`));
    });
  });
}

/** Writes a JSON config file (0600: it names sockets and addresses only, but nobody else needs it). */
export function writeConfig(file: string, data: unknown): void {
  fs.writeFileSync(file, `${JSON.stringify(data, null, 2)}\n`, { mode: 0o600 });
}
