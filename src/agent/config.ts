// kybernate-agent's configuration: built-in defaults, then a JSON file (--config; its keys are the flags'
// names, and keys starting with "//" are comments), then the command line. shim-config/kybernate-agent.json
// lists every key with its default.
import { DEFAULT_AGENT_SOCKET } from '../agent-api/definition';
import { ConfigError, LOG_LEVELS, hostPortOption, readConfigSources } from '../daemon-config';
import { isLoopback, type HostPort } from '../hostport';
import { StorageConfigError, parseStorageConfig, type StorageConfig } from '../storage/config';

export const DEFAULT_CONFIG_FILE = '/etc/kybernate/kybernate-agent.json';

export { ConfigError };

export interface AgentConfig {
  containerdAddress: string;
  containerdState: string;
  socket: string;
  snapshotDir: string;
  /** TCP with mutual TLS; undefined: the unix socket only. */
  tcp?: HostPort & { ca: string; cert: string; key: string };
  /** The Prometheus endpoint (loopback only); undefined: off. */
  metrics?: HostPort;
  logLevel: string;
  /** The config file read, if any. */
  configFile?: string;
  /** The snapshot tiers below the snapshot directory (the file's "storage" key; src/storage/config.ts). */
  storage: StorageConfig;
  /** The file has a "storage" key: the storage policy runs (hsm.ts). */
  storageConfigured: boolean;
}

/** Each key: its flag, its default, and what it sets (the usage text and the example file say the same). */
export const KEYS = {
  'containerd-address': ['SOCKET', '$CONTAINERD_ADDRESS, else /run/containerd/containerd.sock', 'containerd\'s gRPC socket'],
  'containerd-state': ['DIR', '/run/containerd', 'containerd\'s state directory, where the shims\' addresses are'],
  socket: ['PATH', DEFAULT_AGENT_SOCKET, 'the agent\'s unix socket (root only: directory 0700, socket 0600)'],
  'snapshot-dir': ['DIR', '/var/lib/kybernate/snapshots', 'where checkpoints are written'],
  tcp: ['HOST:PORT', 'off', 'also serve on TCP, with mutual TLS (needs --tls-ca, --tls-cert, --tls-key)'],
  'tls-ca': ['FILE', '', 'PEM CA: clients must present a certificate it signed'],
  'tls-cert': ['FILE', '', 'PEM certificate chain of the agent (TCP)'],
  'tls-key': ['FILE', '', 'PEM private key of the agent (TCP)'],
  metrics: ['HOST:PORT', '127.0.0.1:9464', 'Prometheus metrics at http://HOST:PORT/metrics; loopback only; "off" to disable'],
  'log-level': ['LEVEL', 'info', 'fatal, error, warn, info, debug or trace'],
} as const;
type Key = keyof typeof KEYS;

export const USAGE = `usage: kybernate-agent [options]

The node agent: one gRPC door to every Kybernate workload on this node.

options:
  --config FILE               JSON config file; its keys are the option names below (default ${DEFAULT_CONFIG_FILE}, read if it exists)
${Object.entries(KEYS).map(([k, [arg, def, text]]) => `  ${`--${k} ${arg}`.padEnd(27)} ${text}${def ? ` (default ${def})` : ''}`).join('\n')}
  --help, --version

Options on the command line override the file.
`;

/** The configuration from `argv` (and the file it names); 'help' / 'version' when those were asked for. */
export function loadConfig(argv: string[], env: NodeJS.ProcessEnv = process.env): AgentConfig | 'help' | 'version' {
  const sources = readConfigSources(argv, Object.keys(KEYS), DEFAULT_CONFIG_FILE, ['storage']);
  if (typeof sources === 'string') return sources;
  const { file, fromFile } = sources;
  const value = (k: Key): string | undefined => sources.value(k);

  let storage: StorageConfig;
  try {
    // The RAM tier's capacity is not enforced yet (the policy runs by hand: snapshots mv); unbounded here.
    storage = parseStorageConfig(fromFile.storage, { ramCapacityBytes: Infinity, env });
  } catch (err) {
    if (err instanceof StorageConfigError) throw new ConfigError(`config file ${file}: ${err.message}`);
    throw err;
  }
  const ramDir = (fromFile.storage as { ram?: { dir?: unknown } } | undefined)?.ram?.dir;
  const cfg: AgentConfig = {
    containerdAddress: value('containerd-address') ?? (env.CONTAINERD_ADDRESS || '/run/containerd/containerd.sock'),
    containerdState: value('containerd-state') ?? '/run/containerd',
    socket: value('socket') ?? DEFAULT_AGENT_SOCKET,
    // The ram tier is the snapshot directory: --snapshot-dir, else storage.ram.dir, else the default.
    snapshotDir: value('snapshot-dir') ?? (typeof ramDir === 'string' ? storage.ram.dir : '/var/lib/kybernate/snapshots'),
    storage,
    storageConfigured: fromFile.storage !== undefined,
    logLevel: value('log-level') ?? 'info',
    configFile: file,
  };
  if (!LOG_LEVELS.includes(cfg.logLevel)) throw new ConfigError(`--log-level must be one of ${LOG_LEVELS.join(', ')}, not ${cfg.logLevel}`);

  const tcp = value('tcp');
  const tls = { ca: value('tls-ca'), cert: value('tls-cert'), key: value('tls-key') };
  if (tcp !== undefined) {
    if (!tls.ca || !tls.cert || !tls.key) {
      throw new ConfigError('--tcp is mutual TLS only: give --tls-ca (the CA that signs client certificates), --tls-cert and --tls-key');
    }
    cfg.tcp = { ...hostPortOption('tcp', tcp), ca: tls.ca, cert: tls.cert, key: tls.key };
  } else if (tls.ca || tls.cert || tls.key) {
    throw new ConfigError('--tls-ca, --tls-cert and --tls-key are for --tcp, which is not set');
  }

  const metrics = value('metrics') ?? '127.0.0.1:9464';
  if (metrics !== 'off') {
    cfg.metrics = hostPortOption('metrics', metrics);
    if (!isLoopback(cfg.metrics.host)) {
      throw new ConfigError(`--metrics ${metrics}: the metrics are served without authentication, so only on a loopback address (127.0.0.1:PORT, [::1]:PORT); "off" disables them`);
    }
  }
  return cfg;
}
