// `kybernate-agent`: the node agent daemon. Configuration in config.ts, the parts put together in daemon.ts.
import { daemonMain } from '../daemon-main';
import { ConfigError, USAGE, loadConfig } from './config';
import { startAgent } from './daemon';

// CUDA queries run on libuv's threadpool (4 threads by default), beside every fs call.
process.env.UV_THREADPOOL_SIZE ??= '16';
// The S3 SDK warns on Node 20 that its releases after January 2027 will need Node 22; the lockfile pins the
// release we ship, which supports Node 20 (the project's runtime), so the warning says nothing about this agent.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

daemonMain({
  name: 'kybernate-agent',
  usage: USAGE,
  load: (argv) => loadConfig(argv),
  isConfigError: (err): err is ConfigError => err instanceof ConfigError,
  start: startAgent,
});
