// Command dispatch. Each command module is imported only when it runs, so `kybernate doctor` does not
// parse the checkpoint code and vice versa.
import { RUNTIME_NAME, VERSION } from '../shim/version';

export const USAGE = `usage: kybernate <command> [options]

commands:
  doctor [--json]                                   check that this node can checkpoint and restore
  process checkpoint --pid P --images DIR [--leave-running] [--tcp-established] [--shell-job]
                     [--ext-unix-sk] [--file-locks] [--timeout SECONDS] [--json]
  process restore --images DIR [--tcp-established] [--shell-job] [--ext-unix-sk] [--file-locks]
                  [--timeout SECONDS] [--json]
  suspend <container> [-n NS] [--state-dir DIR] [--lock-timeout SECONDS] [--timeout SECONDS] [--json]
                                                    GPU suspend in place: checkpoint the container's CUDA
                                                    state into host memory, then freeze it
  resume <container> [-n NS] [--state-dir DIR] [--timeout SECONDS] [--json]
                                                    thaw a suspended container, then restore its GPU state
  gpu-status <container> [-n NS] [--state-dir DIR] [--json]
                                                    whether a container is suspended, since when, which pids
                                                    (NS: containerd namespace, default "default"; DIR:
                                                    containerd's state directory, default /run/containerd)
  version                                           print the version
`;

/** A wrong command line: printed with the usage, exit code 2. */
export class UsageError extends Error {}

export async function run(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case 'doctor':
        return await (await import('./commands/doctor')).doctorCommand(rest);
      case 'process':
        return await (await import('./commands/process')).processCommand(rest);
      case 'suspend':
        return await (await import('./commands/suspend')).suspendCommand(rest);
      case 'resume':
        return await (await import('./commands/suspend')).resumeCommand(rest);
      case 'gpu-status':
        return await (await import('./commands/suspend')).gpuStatusCommand(rest);
      case 'version':
      case '--version':
      case '-v':
        process.stdout.write(`kybernate ${VERSION} (${RUNTIME_NAME})\n`);
        return 0;
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(USAGE);
        return cmd === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command: ${cmd}`);
    }
  } catch (err) {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`kybernate: ${(err as Error).message}\n\n${USAGE}`);
      return 2;
    }
    process.stderr.write(`kybernate: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}
