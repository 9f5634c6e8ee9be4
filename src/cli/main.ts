// `kybernate`: node diagnostics, manual process checkpoint/restore, and the node agent's workloads (ps,
// suspend, resume). Commands live in commands/.
import { run } from './run';

void run(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
