// Command-line flags of a runtime v2 shim, parsed the way Go's `flag` package does: `-x v`, `--x v`, `-x=v`,
// booleans without a value, parsing stops at the first non-flag (the action). Unknown flags are tolerated
// because containerd adds flags over time.

/** Parsed shim invocation. */
export interface ShimFlags {
  namespace: string;
  id: string;
  address: string;
  publishBinary: string;
  bundle: string;
  socket: string;
  debug: boolean;
  version: boolean;
  info: boolean;
  action: string;
  args: string[];
}

const BOOLEANS = new Set(['debug', 'v', 'version', 'info']);
const KNOWN = new Set(['namespace', 'id', 'address', 'publish-binary', 'bundle', 'socket', 'debug-socket']);

export function parseFlags(argv: readonly string[]): ShimFlags {
  const values = new Map<string, string>();
  const bools = new Set<string>();
  let i = 0;
  for (; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') { i++; break; }
    if (!arg.startsWith('-') || arg === '-') break;
    const body = arg.replace(/^--?/, '');
    const eq = body.indexOf('=');
    const name = eq >= 0 ? body.slice(0, eq) : body;
    if (BOOLEANS.has(name)) {
      const v = eq >= 0 ? body.slice(eq + 1) : 'true';
      if (v === 'true' || v === '1') bools.add(name);
      continue;
    }
    if (eq >= 0) { values.set(name, body.slice(eq + 1)); continue; }
    // A value flag takes the next argument; an unknown flag followed by a non-flag also does.
    if (KNOWN.has(name) || (i + 1 < argv.length && !argv[i + 1].startsWith('-'))) {
      if (i + 1 < argv.length) values.set(name, argv[++i]);
    }
  }
  const rest = argv.slice(i);
  return {
    namespace: values.get('namespace') ?? '',
    id: values.get('id') ?? '',
    address: values.get('address') ?? '',
    publishBinary: values.get('publish-binary') ?? '',
    bundle: values.get('bundle') ?? '',
    socket: values.get('socket') ?? '',
    debug: bools.has('debug'),
    version: bools.has('v') || bools.has('version'),
    info: bools.has('info'),
    action: rest[0] ?? '',
    args: rest.slice(1),
  };
}
