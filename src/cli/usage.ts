// Usage texts: one entry per command, from which both the top-level usage and each command's --help are
// written, so that the two cannot disagree.

interface CommandHelp {
  /** The command line after `kybernate `, wrapped by hand where long. */
  synopsis: string[];
  /** One sentence: what the command does. */
  description: string;
  /** Each option and what it does. */
  options?: Array<[string, string]>;
  /** Anything else a user needs (defaults, files, exit codes). */
  notes?: string[];
}

const EXIT_CODES = 'Exit codes: 0 ok, 1 the operation failed, 2 usage error, 3 the agent is not running.';

const CRIU_OPTIONS: Array<[string, string]> = [
  ['--tcp-established', 'checkpoint/restore established TCP connections (CRIU --tcp-established)'],
  ['--shell-job', 'the tree was started from a shell and shares its session or terminal (CRIU --shell-job)'],
  ['--ext-unix-sk', 'allow unix sockets connected to processes outside the tree (CRIU --ext-unix-sk)'],
  ['--file-locks', 'checkpoint/restore file locks held by the tree (CRIU --file-locks)'],
  ['--timeout SECONDS', 'kill CRIU after this long (default 600); a checkpoint then leaves the process running'],
  ['--json', 'print the result (or the error, its step and CRIU\'s log lines) as JSON'],
];

const CONTAINER_OPTIONS: Array<[string, string]> = [
  ['-n, --namespace NS', 'containerd namespace of the container (default "default"; Kubernetes: k8s.io)'],
  ['--agent SOCKET', 'go through the node agent at SOCKET (default $KYBERNATE_AGENT, else /run/kybernate/agent.sock if it exists)'],
  ['--state-dir DIR', 'go straight to the container\'s shim, found in containerd\'s state directory DIR (default /run/containerd)'],
];

/** The options of the commands that only work through the agent. */
const AGENT_OPTIONS: Array<[string, string]> = [
  ['-n, --namespace NS', 'containerd namespace of the container (default "default"; Kubernetes: k8s.io)'],
  ['--agent SOCKET', 'the node agent\'s socket (default $KYBERNATE_AGENT, else /run/kybernate/agent.sock)'],
];

const SNAPSHOT_OPTIONS: Array<[string, string]> = [
  ['-n, --namespace NS', 'only this containerd namespace (default "default")'],
  ['-A, --all-namespaces', 'every namespace'],
  AGENT_OPTIONS[1]!,
  ['--timeout SECONDS', 'give up after this long (default 60)'],
];

/** How suspend, resume and gpu-status choose between the agent and the shim, and what their exit codes mean. */
const CONTAINER_NOTES = [
  'Through the node agent when --agent or $KYBERNATE_AGENT names one or /run/kybernate/agent.sock exists;',
  'otherwise (or with --state-dir) straight through the container\'s shim. The agent runs one operation per',
  'container at a time: a second one waits for the first.',
  EXIT_CODES,
];

export const COMMANDS: Record<string, CommandHelp> = {
  doctor: {
    synopsis: ['doctor [--address SOCKET] [--json]'],
    description: 'check that this node can checkpoint and restore: CRIU, the kernel, containerd, runc, the shim, GPUs',
    options: [
      ['--address SOCKET', 'the containerd whose shim lookup is checked (default /run/containerd/containerd.sock)'],
      ['--json', 'print every check as JSON'],
    ],
    notes: ['Each check that is not OK comes with its fix. Exit code 1 when a required check failed.'],
  },
  'process checkpoint': {
    synopsis: [
      'process checkpoint --pid P --images DIR [--leave-running] [--tcp-established] [--shell-job]',
      '                   [--ext-unix-sk] [--file-locks] [--timeout SECONDS] [--json]',
    ],
    description: 'checkpoint a running process tree, with its GPU state, into image files (it stops, unless --leave-running)',
    options: [
      ['--pid P', 'the root of the process tree (required; CRIU dumps P and all its descendants)'],
      ['--images DIR', 'where the image files and kybernate-manifest.json are written (required; empty or new)'],
      ['--leave-running', 'let the tree run on after the checkpoint instead of stopping it'],
      ...CRIU_OPTIONS,
    ],
    notes: ['The manifest records the CRIU options; `process restore` repeats them (options given to it win).'],
  },
  'process restore': {
    synopsis: [
      'process restore --images DIR [--tcp-established] [--shell-job] [--ext-unix-sk] [--file-locks]',
      '                [--timeout SECONDS] [--json]',
    ],
    description: 'restore a process tree, with its GPU state, from the images of `process checkpoint`',
    options: [
      ['--images DIR', 'the directory `process checkpoint` wrote (required; refused unless every file matches kybernate-manifest.json)'],
      ...CRIU_OPTIONS,
    ],
    notes: ['The tree gets its old pids back: they must be free, and the files it had open must still exist.'],
  },
  ps: {
    synopsis: ['ps [-n NS | -A] [--agent SOCKET] [--json]'],
    description: 'list the node\'s Kybernate workloads through the node agent: state, GPU memory, snapshot, since when',
    options: [
      ['-n, --namespace NS', 'only this containerd namespace (default "default")'],
      ['-A, --all-namespaces', 'every namespace'],
      ['--agent SOCKET', 'the node agent\'s socket (default $KYBERNATE_AGENT, else /run/kybernate/agent.sock)'],
      ['--json', 'print the workloads as JSON'],
    ],
    notes: [
      'States: RUNNING, PAUSED (frozen, GPU state on the GPU), SUSPENDED (GPU state in host memory, frozen),',
      'CHECKPOINTED (no task; a snapshot of it exists), STOPPED. Needs the agent (kybernate-agent).',
      EXIT_CODES,
    ],
  },
  suspend: {
    synopsis: ['suspend <container> [-n NS] [--agent SOCKET | --state-dir DIR] [--lock-timeout SECONDS]', '        [--timeout SECONDS] [--json]'],
    description: 'GPU suspend in place: checkpoint the container\'s CUDA state into host memory, then freeze it',
    options: [
      ...CONTAINER_OPTIONS,
      ['--lock-timeout SECONDS', 'how long to wait for running CUDA work to finish before the checkpoint'],
      ['--timeout SECONDS', 'give up after this long (default 1200)'],
      ['--json', 'print the result as JSON'],
    ],
    notes: CONTAINER_NOTES,
  },
  resume: {
    synopsis: ['resume <container> [-n NS] [--agent SOCKET | --state-dir DIR] [--timeout SECONDS] [--json]'],
    description: 'thaw a suspended container, then restore its GPU state',
    options: [...CONTAINER_OPTIONS, ['--timeout SECONDS', 'give up after this long (default 1200)'], ['--json', 'print the result as JSON']],
    notes: CONTAINER_NOTES,
  },
  'gpu-status': {
    synopsis: ['gpu-status <container> [-n NS] [--agent SOCKET | --state-dir DIR] [--json]'],
    description: 'whether a container is suspended, since when, and which of its processes hold GPU state',
    options: [...CONTAINER_OPTIONS, ['--json', 'print the status as JSON']],
    notes: CONTAINER_NOTES,
  },
  checkpoint: {
    synopsis: ['checkpoint <container> [--exit] [--tier ram|disk|s3] [-n NS] [--agent SOCKET] [--timeout SECONDS] [--json]'],
    description: 'checkpoint the container\'s task, with its GPU state, into a snapshot in the agent\'s snapshot directory; --exit then ends the task (scale to zero)',
    options: [
      ['--exit', 'end the task once the snapshot is complete and durable (scale to zero); otherwise it runs on'],
      ['--tier TIER', 'keep the snapshot in ram (default: plain files), disk or s3 (deduplicated chunks; moved there before the command returns)'],
      ...AGENT_OPTIONS,
      ['--timeout SECONDS', 'give up waiting after this long (default 1800); a checkpoint that has begun still finishes'],
      ['--json', 'print the result (snapshot, steps) or the error as JSON'],
    ],
    notes: [
      'With --exit the container and its rw layer stay, with no task: `kybernate ps` shows it CHECKPOINTED and',
      '`kybernate restore` starts it again where it stopped. Needs the agent (kybernate-agent).',
      EXIT_CODES,
    ],
  },
  restore: {
    synopsis: ['restore <container> [--snapshot SNAPSHOT] [-n NS] [--agent SOCKET] [--timeout SECONDS] [--json]'],
    description: 'start the container again from its newest snapshot (or --snapshot): a new task, its processes where they were',
    options: [
      ['--snapshot SNAPSHOT', 'restore this snapshot of the container (its id, sha256:..., or at least 4 of its hex digits)'],
      ...AGENT_OPTIONS,
      ['--timeout SECONDS', 'give up waiting after this long (default 1800); a restore that has begun still finishes'],
      ['--json', 'print the result (new pid, state, steps) or the error as JSON'],
    ],
    notes: [
      'The container must have no running task (exit code 1, KYB_ERR_FAILED_PRECONDITION otherwise). The',
      'snapshot stays after the restore: `kybernate snapshots rm` deletes it. Needs the agent (kybernate-agent).',
      EXIT_CODES,
    ],
  },
  'snapshots ls': {
    synopsis: ['snapshots ls [<container>] [-n NS | -A] [--agent SOCKET] [--timeout SECONDS] [--json]'],
    description: 'list the complete snapshots in the agent\'s snapshot directory, oldest first (of one container if given)',
    options: [...SNAPSHOT_OPTIONS, ['--json', 'print every snapshot (with its path) as JSON']],
    notes: ['EXITED: whether the task ended with the checkpoint (--exit). Needs the agent (kybernate-agent).', EXIT_CODES],
  },
  'snapshots rm': {
    synopsis: ['snapshots rm <snapshot> [-n NS | -A] [--agent SOCKET] [--timeout SECONDS] [--json]'],
    description: 'delete a snapshot from the agent\'s snapshot directory',
    options: [...SNAPSHOT_OPTIONS, ['--json', 'print the snapshot removed (or the error) as JSON']],
    notes: [
      '<snapshot> is its id (sha256:...) or a unique prefix of at least 4 of its hex digits (the SNAPSHOT column',
      'of `snapshots ls`), looked up in the namespace (-n, default "default"), or in every one with -A.',
      'Needs the agent (kybernate-agent).',
      EXIT_CODES,
    ],
  },
  'activator status': {
    synopsis: ['activator status [--admin SOCKET] [--json]'],
    description: 'the activator\'s routes: workload, upstream, sleep kind, state (awake, asleep, waking, failed, ...), requests in flight and held, the last wake and its time',
    options: [
      ['--admin SOCKET', 'the activator\'s admin socket (default $KYBERNATE_ACTIVATOR, else /run/kybernate/activator.sock)'],
      ['--json', 'print the status (with each wake\'s steps) as JSON'],
    ],
    notes: ['Exit codes: 0 ok, 1 failed, 2 usage error, 3 the activator is not running.'],
  },
  demo: {
    synopsis: ['demo [--once] [--idle SECONDS] [--sleep checkpoint|suspend] [--keep] [--rounds N] [--json]'],
    description: 'scale to zero on this host: an HTTP workload with the Kybernate runtime behind the activator goes to sleep when idle and wakes on the next request',
    options: [
      ['--once', 'one sleep and one wake, then exit 0 (the default without a terminal on stdin); the last line is the wake time in ms'],
      ['--idle SECONDS', 'idle time before the workload is put to sleep (default 3)'],
      ['--sleep KIND', 'checkpoint (default: the process exits, its memory is freed) or suspend (needs CUDA processes)'],
      ['--keep', 'leave the workload, agent and activator running at the end (prints how to reach and stop them)'],
      ['--rounds N', 'sleep and wake N times (implies --once; `make bench` uses it)'],
      ['--json', 'the rounds (each wake\'s time and steps) as JSON on stdout, the story on stderr (implies --once)'],
    ],
    notes: [
      'Uses the local containerd when it answers and finds the Kybernate shim; otherwise starts a private one (from what',
      '`make setup` installed) for its own duration. Starts its own agent and activator. Needs root. Ctrl-C cleans up.',
    ],
  },
  'snapshots mv': {
    synopsis: ['snapshots mv <snapshot> --tier ram|disk|s3 [-n NS | -A] [--agent SOCKET] [--timeout SECONDS] [--json]'],
    description: 'move a snapshot to another storage tier: ram (plain files, the fastest restore), disk or s3 (deduplicated chunks)',
    options: [['--tier TIER', 'ram, disk or s3 (the agent\'s config file names the disk directory and the S3 bucket)'], ...SNAPSHOT_OPTIONS, ['--json', 'print the snapshot moved, the bytes written and the time as JSON']],
    notes: [
      'The copy in the new tier is complete and verified before the old one is released. `kybernate restore` restores',
      'from whichever tier holds the snapshot (bringing it into ram first). Needs the agent (kybernate-agent).',
      EXIT_CODES,
    ],
  },
  'snapshots pin': {
    synopsis: ['snapshots pin <snapshot> --tier ram|disk|s3 | --unpin [--agent SOCKET] [--json]'],
    description: 'pin a snapshot\'s copy in a tier: the storage policy never moves it out of it nor deletes the snapshot',
    options: [['--tier TIER', 'the tier (it must hold a copy there)'], ['--unpin', 'remove the pin'], ['--agent SOCKET', 'the node agent\'s socket'], ['--json', 'print the snapshot as JSON']],
    notes: ['Needs the agent, with a "storage" key in its config file (the policy runs only then).', EXIT_CODES],
  },
  'snapshots verify': {
    synopsis: ['snapshots verify <snapshot> [--agent SOCKET] [--timeout SECONDS] [--json]'],
    description: 'read every byte of a snapshot, in each tier holding it, against the sha256 digests of its manifest',
    options: [['--agent SOCKET', 'the node agent\'s socket (default $KYBERNATE_AGENT, else /run/kybernate/agent.sock)'], ['--json', 'print the tiers verified and the bytes read as JSON']],
    notes: ['A mismatch exits 1 with KYB_ERR_CHECKPOINT_INVALID, naming the tier and the file or chunk. Needs the agent.', EXIT_CODES],
  },
  'snapshots gc': {
    synopsis: ['snapshots gc [--grace SECONDS] [--agent SOCKET] [--timeout SECONDS] [--json]'],
    description: 'delete the chunks no snapshot references any more in the disk and s3 tiers',
    options: [
      ['--grace SECONDS', 'keep unreferenced chunks younger than this (a checkpoint may be writing them; default 3600)'],
      ['--agent SOCKET', 'the node agent\'s socket (default $KYBERNATE_AGENT, else /run/kybernate/agent.sock)'],
      ['--json', 'print each tier\'s deleted and kept chunks and the bytes freed as JSON'],
    ],
    notes: ['Needs the agent (kybernate-agent).', EXIT_CODES],
  },
  version: {
    synopsis: ['version'],
    description: 'print the version',
  },
};

/** The commands made of subcommands, and theirs. */
const GROUPS: Record<string, string[]> = { process: ['checkpoint', 'restore'], snapshots: ['ls', 'rm', 'mv', 'pin', 'verify', 'gc'], activator: ['status'] };

/** The help key of a command line: "process checkpoint" for `process checkpoint ...`, else the command. */
export function helpKey(cmd: string, rest: readonly string[]): string | undefined {
  if (cmd in GROUPS) {
    const sub = `${cmd} ${rest[0] ?? ''}`;
    return sub in COMMANDS ? sub : cmd;
  }
  return cmd in COMMANDS ? cmd : undefined;
}

/** `kybernate <key> --help`; the key of a group ("process", "snapshots") covers all of its subcommands. */
export function commandUsage(key: string): string {
  const subs = GROUPS[key];
  if (subs) {
    return `usage: kybernate ${key} ${subs.join('|')} [options]\n\n${subs.map((s) => entry(`${key} ${s}`)).join('\n')}` +
      `\n(${subs.map((s) => `kybernate ${key} ${s} --help`).join(', ')}: their options)\n`;
  }
  const h = COMMANDS[key];
  if (h === undefined) return USAGE;
  const lines = [`usage: kybernate ${h.synopsis[0]}`, ...h.synopsis.slice(1).map((l) => `                 ${l}`), '', `${h.description}.`];
  if (h.options?.length) {
    const w = Math.max(...h.options.map(([o]) => o.length));
    lines.push('', 'options:', ...h.options.map(([o, text]) => `  ${o.padEnd(w)}  ${text}`));
  }
  if (h.notes?.length) lines.push('', ...h.notes);
  return `${lines.join('\n')}\n`;
}

function entry(key: string): string {
  const h = COMMANDS[key]!;
  return `${h.synopsis.map((l) => `  ${l}`).join('\n')}\n      ${h.description}\n`;
}

export const USAGE = `usage: kybernate <command> [options]

commands:
${Object.keys(COMMANDS).map(entry).join('')}
kybernate <command> --help prints a command's options.
${EXIT_CODES}
`;
