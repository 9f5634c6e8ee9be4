// `kybernate doctor [--address SOCKET] [--json]`: what this node lacks for checkpoint/restore, with the fix for each.
import { parseArgs } from 'node:util';
import { allChecks, type CheckResult } from '../doctor/checks';

export function renderTable(checks: readonly CheckResult[]): string {
  const w = Math.max(...checks.map((c) => c.name.length), 5);
  const lines = [`${'CHECK'.padEnd(w)}  STATUS  VALUE`];
  for (const c of checks) {
    lines.push(`${c.name.padEnd(w)}  ${c.status.padEnd(6)}  ${c.value}`);
    if (c.fix !== undefined && c.status !== 'OK') lines.push(`${''.padEnd(w)}          fix: ${c.fix}`);
  }
  return `${lines.join('\n')}\n`;
}

/** Exit code 1 when a required check failed. */
export function verdict(checks: readonly CheckResult[]): { ok: boolean; missing: string[] } {
  const missing = checks.filter((c) => c.required && c.status === 'FAIL').map((c) => c.name);
  return { ok: missing.length === 0, missing };
}

export async function doctorCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { json: { type: 'boolean' }, address: { type: 'string' } }, strict: true });
  const checks = await allChecks(values.address);
  const v = verdict(checks);
  if (values.json) {
    process.stdout.write(`${JSON.stringify({ ok: v.ok, missing: v.missing, checks }, null, 2)}\n`);
  } else {
    process.stdout.write(renderTable(checks));
    process.stdout.write(
      v.ok ? '\nthis node can checkpoint and restore processes\n' : `\nmissing (required): ${v.missing.join(', ')}\n`,
    );
  }
  return v.ok ? 0 : 1;
}
