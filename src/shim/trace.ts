// Timing trace for benchmarks: with KYBERNATE_TRACE=<absolute file> in containerd's environment, every shim
// part appends one JSON line per step (the native front writes the same format), so a benchmark can split a
// container's wall time into containerd, front, daemon and runc. Off (a no-op) otherwise.
import * as fs from 'node:fs';

export function trace(component: string, event: string, id: string, ms: number): void {
  const file = process.env.KYBERNATE_TRACE;
  if (!file || !file.startsWith('/')) return;
  try {
    fs.appendFileSync(file, `${JSON.stringify({ c: component, ev: event, id, ms: Number(ms.toFixed(3)), t: Date.now() })}\n`, { mode: 0o600 });
  } catch {
    // a trace never fails the shim
  }
}
