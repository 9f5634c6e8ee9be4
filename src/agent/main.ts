// `kybernate-agent`: the node agent daemon. Configuration in config.ts, the parts put together in daemon.ts.
import { daemonMain } from '../daemon-main';
import { ConfigError, USAGE, loadConfig } from './config';
import { startAgent } from './daemon';

// CUDA queries run on libuv's threadpool (4 threads by default), beside every fs call.
process.env.UV_THREADPOOL_SIZE ??= '16';

daemonMain({
  name: 'kybernate-agent',
  usage: USAGE,
  load: (argv) => loadConfig(argv),
  isConfigError: (err): err is ConfigError => err instanceof ConfigError,
  start: startAgent,
});
