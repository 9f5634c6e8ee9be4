// The entry point the daemons share (kybernate-agent, kybernate-activator): their configuration, or its error
// with the usage (exit 2); --help and --version; a pino logger of JSON lines; start (exit 1 when it fails);
// then serving until SIGTERM or SIGINT, which close the daemon (exit 0).
import pino, { type Logger } from 'pino';
import { RUNTIME_NAME, VERSION } from './version';

export interface DaemonSpec<C extends { logLevel: string }, D extends { close(): Promise<void> }> {
  name: string;
  usage: string;
  load(argv: string[]): C | 'help' | 'version';
  /** A wrong command line or config file (its message is printed with the usage). */
  isConfigError(err: unknown): err is Error;
  start(cfg: C, log: Logger): Promise<D>;
  /** Once started: any other signal the daemon takes (the activator's SIGHUP). */
  started?(daemon: D, log: Logger): void;
}

export function daemonMain<C extends { logLevel: string }, D extends { close(): Promise<void> }>(spec: DaemonSpec<C, D>): void {
  void run(spec, process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  }, (err: unknown) => {
    process.stderr.write(`${spec.name}: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exitCode = 1;
  });
}

async function run<C extends { logLevel: string }, D extends { close(): Promise<void> }>(spec: DaemonSpec<C, D>, argv: string[]): Promise<number> {
  let cfg;
  try {
    cfg = spec.load(argv);
  } catch (err) {
    if (!spec.isConfigError(err)) throw err;
    process.stderr.write(`${spec.name}: ${err.message}\n\n${spec.usage}`);
    return 2;
  }
  if (cfg === 'help') {
    process.stdout.write(spec.usage);
    return 0;
  }
  if (cfg === 'version') {
    process.stdout.write(`${spec.name} ${VERSION} (${RUNTIME_NAME})\n`);
    return 0;
  }
  const log = pino({ level: cfg.logLevel, base: { component: spec.name, pid: process.pid } });
  let daemon: D;
  try {
    daemon = await spec.start(cfg, log);
  } catch (err) {
    log.fatal({ err: (err as Error).message }, 'cannot start');
    process.stderr.write(`${spec.name}: ${(err as Error).message}\n`);
    return 1;
  }
  spec.started?.(daemon, log);
  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      log.info({ signal }, 'stopping');
      void daemon.close().then(resolve);
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  log.info('stopped');
  return 0;
}
