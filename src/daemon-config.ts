// Where the daemons' settings come from (kybernate-agent, kybernate-activator): the command line, then one
// JSON config file (--config, else the daemon's default file if it exists) whose keys are the options' names.
// Flags override the file. Keys starting with "//" are comments; a daemon's own structured keys (the agent's
// "storage", the activator's "routes") may hold any JSON and are read by the daemon; every other key must be
// one of the options and a string, and an unknown one is refused (a typo never silently becomes a default).
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { parseHostPort, type HostPort } from './hostport';

/** A wrong command line or config file: printed with the usage, exit code 2 (at start). */
export class ConfigError extends Error {}

/** pino's levels, which --log-level takes. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** An option's HOST:PORT or [IPv6]:PORT; ConfigError naming the option otherwise. */
export function hostPortOption(flag: string, s: string): HostPort {
  const hp = parseHostPort(s);
  if (!hp) throw new ConfigError(`--${flag} must be HOST:PORT, not ${s}`);
  return hp;
}

export interface ConfigSources {
  /** The config file read, if any. */
  file?: string;
  fromFile: Record<string, unknown>;
  /** An option's value: its flag, else its key in the file; '' counts as unset. */
  value(key: string): string | undefined;
}

/** The command line and the file it names; 'help' / 'version' when those were asked for. */
export function readConfigSources(argv: string[], keys: readonly string[], defaultFile: string, structured: readonly string[]):
  ConfigSources | 'help' | 'version' {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        config: { type: 'string' }, help: { type: 'boolean', short: 'h' }, version: { type: 'boolean', short: 'v' },
        ...Object.fromEntries(keys.map((k) => [k, { type: 'string' as const }])),
      },
      allowPositionals: false,
      strict: true,
    });
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  const flags = parsed.values as Record<string, string | boolean | undefined>;
  if (flags.help) return 'help';
  if (flags.version) return 'version';
  const explicit = typeof flags.config === 'string' ? flags.config : undefined;
  const file = explicit ?? (fs.existsSync(defaultFile) ? defaultFile : undefined);
  const fromFile = file === undefined ? {} : readConfigFile(file, keys, structured);
  return {
    file,
    fromFile,
    value: (k) => {
      const v = flags[k] ?? fromFile[k];
      return typeof v === 'string' && v !== '' ? v : undefined;
    },
  };
}

/** The file as an object of known keys (see the file comment); ConfigError naming the file otherwise. */
export function readConfigFile(file: string, keys: readonly string[], structured: readonly string[]): Record<string, unknown> {
  let data: unknown;
  try {
    data = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ConfigError(`config file ${file}: ${(err as Error).message}`);
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) throw new ConfigError(`config file ${file}: not a JSON object`);
  for (const [k, v] of Object.entries(data)) {
    if (k.startsWith('//') || structured.includes(k)) continue;
    if (!keys.includes(k)) throw new ConfigError(`config file ${file}: unknown key ${JSON.stringify(k)} (the keys are ${[...keys, ...structured].join(', ')})`);
    if (typeof v !== 'string') throw new ConfigError(`config file ${file}: ${k} must be a string`);
  }
  return data as Record<string, unknown>;
}
