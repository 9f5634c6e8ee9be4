// kybernate-activator's configuration: built-in defaults, then one JSON file (--config), then the command
// line. The file's daemon keys are the flags' names (read once, at start); its "routes" (routes.ts) are
// read again whenever the file changes or on SIGHUP, without a restart. shim-config/kybernate-activator.json
// shows every key.
import { DEFAULT_AGENT_SOCKET } from '../agent-api/definition';
import { DEFAULT_ACTIVATOR_ADMIN } from '../activator-api/status';
import { ConfigError, LOG_LEVELS, hostPortOption, readConfigFile, readConfigSources } from '../daemon-config';
import { isLoopback, type HostPort } from '../hostport';
import { parseRoutes, type RouteConfig } from './routes';

export const DEFAULT_CONFIG_FILE = '/etc/kybernate/kybernate-activator.json';

export { ConfigError };

export interface ActivatorConfig {
  listen: HostPort;
  agent: string;
  admin: string;
  metrics?: HostPort;
  logLevel: string;
  configFile?: string;
  routes: RouteConfig[];
}

/** Each key: its argument, its default, and what it sets (the usage text and the example file say the same). */
export const KEYS = {
  listen: ['HOST:PORT', '127.0.0.1:8480', 'where the proxy serves HTTP/1.1 and h2c (0.0.0.0:PORT for every interface)'],
  agent: ['PATH', `$KYBERNATE_AGENT, else ${DEFAULT_AGENT_SOCKET}`, 'the node agent\'s socket (unix, or HOST:PORT with mutual TLS)'],
  admin: ['PATH', DEFAULT_ACTIVATOR_ADMIN, 'the status socket `kybernate activator status` reads (root only)'],
  metrics: ['HOST:PORT', '127.0.0.1:9465', 'Prometheus metrics at http://HOST:PORT/metrics; loopback only; "off" to disable'],
  'log-level': ['LEVEL', 'info', 'fatal, error, warn, info, debug or trace'],
} as const;
type Key = keyof typeof KEYS;

export const USAGE = `usage: kybernate-activator [options]

The activator: a reverse proxy in front of Kybernate workloads that puts an idle workload to sleep
through the node agent and wakes it on the next request, holding requests meanwhile.

options:
  --config FILE               JSON config file: the keys below and "routes" (default ${DEFAULT_CONFIG_FILE})
${Object.entries(KEYS).map(([k, [arg, def, text]]) => `  ${`--${k} ${arg}`.padEnd(27)} ${text} (default ${def})`).join('\n')}
  --help, --version

Options on the command line override the file. Routes live in the file only; it is read again when it
changes (or on SIGHUP), and a file that does not parse leaves the routes as they were.
`;

/** The configuration from `argv` (and the file it names); 'help' / 'version' when those were asked for. */
export function loadConfig(argv: string[], env: NodeJS.ProcessEnv = process.env): ActivatorConfig | 'help' | 'version' {
  const sources = readConfigSources(argv, Object.keys(KEYS), DEFAULT_CONFIG_FILE, ['routes']);
  if (typeof sources === 'string') return sources;
  const { file, fromFile } = sources;
  const value = (k: Key): string | undefined => sources.value(k);
  const cfg: ActivatorConfig = {
    listen: hostPortOption('listen', value('listen') ?? '127.0.0.1:8480'),
    agent: value('agent') ?? (env.KYBERNATE_AGENT || DEFAULT_AGENT_SOCKET),
    admin: value('admin') ?? DEFAULT_ACTIVATOR_ADMIN,
    logLevel: value('log-level') ?? 'info',
    configFile: file,
    routes: file === undefined ? [] : routesOf(file, fromFile),
  };
  if (!LOG_LEVELS.includes(cfg.logLevel)) throw new ConfigError(`--log-level must be one of ${LOG_LEVELS.join(', ')}, not ${cfg.logLevel}`);
  const metrics = value('metrics') ?? '127.0.0.1:9465';
  if (metrics !== 'off') {
    cfg.metrics = hostPortOption('metrics', metrics);
    if (!isLoopback(cfg.metrics.host)) {
      throw new ConfigError(`--metrics ${metrics}: the metrics are served without authentication, so only on a loopback address; "off" disables them`);
    }
  }
  return cfg;
}

/** The routes of the config file as it is now (a reload); throws ConfigError, naming the file, when it is wrong. */
export function reloadRoutes(file: string): RouteConfig[] {
  return routesOf(file, readConfigFile(file, Object.keys(KEYS), ['routes']));
}

function routesOf(file: string, data: Record<string, unknown>): RouteConfig[] {
  try {
    return parseRoutes(data.routes ?? []);
  } catch (err) {
    throw new ConfigError(`config file ${file}: ${(err as Error).message}`);
  }
}
