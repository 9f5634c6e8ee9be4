// Command dispatch. Each command module is imported only when it runs, so `kybernate doctor` does not
// parse the checkpoint code and vice versa.
import { RUNTIME_NAME, VERSION } from '../version';
import { EXIT } from './exit-codes';
import { USAGE, commandUsage, helpKey } from './usage';
import { UsageError } from './usage-error';

export { USAGE };

export async function run(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  const key = cmd === undefined ? undefined : helpKey(cmd, rest);
  // --help anywhere before a `--` asks for the command's usage, whatever else is on the line.
  const optionArgs = rest.includes('--') ? rest.slice(0, rest.indexOf('--')) : rest;
  if (key !== undefined && (optionArgs.includes('--help') || optionArgs.includes('-h'))) {
    process.stdout.write(commandUsage(key));
    return EXIT.OK;
  }
  try {
    switch (cmd) {
      case 'doctor':
        return await (await import('./commands/doctor')).doctorCommand(rest);
      case 'process':
        return await (await import('./commands/process')).processCommand(rest);
      case 'ps':
        return await (await import('./commands/ps')).psCommand(rest);
      case 'suspend':
        return await (await import('./commands/suspend')).suspendCommand(rest);
      case 'resume':
        return await (await import('./commands/suspend')).resumeCommand(rest);
      case 'gpu-status':
        return await (await import('./commands/suspend')).gpuStatusCommand(rest);
      case 'checkpoint':
        return await (await import('./commands/checkpoint')).checkpointCommand(rest);
      case 'restore':
        return await (await import('./commands/checkpoint')).restoreCommand(rest);
      case 'snapshots':
        return await (await import('./commands/snapshots')).snapshotsCommand(rest);
      case 'activator':
        return await (await import('./commands/activator')).activatorCommand(rest);
      case 'demo':
        return await (await import('./commands/demo')).demoCommand(rest);
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
        return cmd === undefined ? EXIT.USAGE : EXIT.OK;
      default:
        throw new UsageError(`unknown command: ${cmd}`);
    }
  } catch (err) {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`kybernate: ${(err as Error).message}\n\n${key === undefined ? USAGE : commandUsage(key)}`);
      return EXIT.USAGE;
    }
    process.stderr.write(`kybernate: ${err instanceof Error ? err.message : String(err)}\n`);
    return EXIT.FAILED;
  }
}
