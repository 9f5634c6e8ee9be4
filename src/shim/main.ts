// containerd-shim-kybernate-v2 entry point: dispatch on the action. Heavy modules load lazily so that
// `start` and `delete` stay cheap.
import { parseFlags } from './flags';
import { trace } from './trace';

async function main(): Promise<void> {
  const flags = parseFlags(process.argv.slice(2));
  if (flags.version) {
    const { versionText } = await import('./manager/info');
    process.stdout.write(versionText());
    return;
  }
  if (flags.info) return (await import('./manager/info')).infoAction();
  switch (flags.action) {
    case 'start': return (await import('./manager/start')).start(flags);
    case 'delete': return (await import('./manager/delete')).deleteAction(flags);
    case '': return (await import('./daemon')).runDaemon(flags);
    // A warm spare daemon (spare/spare.ts), booted by a daemon or a slow `start` for the next container group.
    case 'spare': return (await import('./spare/spare')).runSpare();
    default: throw new Error(`unknown action ${JSON.stringify(flags.action)}`);
  }
}

main().then(
  () => {
    // One-shot actions end here even if a handle (stdin, a socket) is still open; stdout to a pipe is
    // written synchronously, so nothing is lost. The daemon keeps running on its own handles.
    const flags = parseFlags(process.argv.slice(2));
    if (flags.action === 'spare') return;
    if (flags.action !== '' || flags.version || flags.info) {
      // The Node path of a one-shot (no front, or no spare answered): its whole life, boot included.
      trace('node', flags.action, flags.id, process.uptime() * 1000);
      process.exit(0);
    }
  },
  (err: unknown) => {
    process.stderr.write(`containerd-shim-kybernate-v2: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
