// `kybernate-activator`: configuration in config.ts, the parts put together in daemon.ts.
import { daemonMain } from '../daemon-main';
import { ConfigError, USAGE, loadConfig } from './config';
import { startActivator } from './daemon';

daemonMain({
  name: 'kybernate-activator',
  usage: USAGE,
  load: (argv) => loadConfig(argv),
  isConfigError: (err): err is ConfigError => err instanceof ConfigError,
  start: startActivator,
  // SIGHUP reads the routes again (systemctl reload), as a change of the file does.
  started: (activator) => process.on('SIGHUP', () => activator.reload()),
});
