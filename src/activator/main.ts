// `kybernate-activator`: configuration in config.ts, the parts put together in daemon.ts.
import pino from 'pino';
import { RUNTIME_NAME, VERSION } from '../version';
import { ConfigError, USAGE, loadConfig } from './config';
import { startActivator } from './daemon';

async function main(argv: string[]): Promise<number> {
  let cfg;
  try {
    cfg = loadConfig(argv);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`kybernate-activator: ${err.message}\n\n${USAGE}`);
    return 2;
  }
  if (cfg === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  if (cfg === 'version') {
    process.stdout.write(`kybernate-activator ${VERSION} (${RUNTIME_NAME})\n`);
    return 0;
  }
  const log = pino({ level: cfg.logLevel, base: { component: 'kybernate-activator', pid: process.pid } });
  let activator;
  try {
    activator = await startActivator(cfg, log);
  } catch (err) {
    log.fatal({ err: (err as Error).message }, 'cannot start');
    process.stderr.write(`kybernate-activator: ${(err as Error).message}\n`);
    return 1;
  }
  process.on('SIGHUP', () => activator.reload());
  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      log.info({ signal }, 'stopping');
      void activator.close().then(resolve);
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  log.info('stopped');
  return 0;
}

void main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
}, (err: unknown) => {
  process.stderr.write(`kybernate-activator: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
