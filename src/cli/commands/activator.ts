// `kybernate activator status`: the activator's routes as it serves them (its admin socket), as a table or JSON.
import { parseArgs } from 'node:util';
import { DEFAULT_ACTIVATOR_ADMIN, fetchActivatorStatus, type RouteStatus } from '../../activator-api/status';
import { KybernateError } from '../../errors';
import { EXIT } from '../exit-codes';
import { age, columns } from '../format';
import { UsageError } from '../usage-error';

export async function activatorCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== 'status') throw new UsageError(sub === undefined ? 'activator: which subcommand? (status)' : `activator: unknown subcommand ${sub}`);
  const { values, positionals } = parseArgs({ args: rest, options: { admin: { type: 'string' }, json: { type: 'boolean' } }, allowPositionals: true, strict: true });
  if (positionals.length > 0) throw new UsageError(`activator status: takes no arguments, got ${positionals.join(' ')}`);
  const socket = values.admin ?? process.env.KYBERNATE_ACTIVATOR ?? DEFAULT_ACTIVATOR_ADMIN;
  try {
    const status = await fetchActivatorStatus(socket);
    if (values.json) {
      process.stdout.write(`${JSON.stringify({ ok: true, ...status }, null, 2)}\n`);
      return EXIT.OK;
    }
    process.stdout.write(`activator ${status.version} on ${status.listen}, agent ${status.agent}, up ${age(new Date(Date.now() - status.uptimeS * 1000))}\n`);
    process.stdout.write(columns(['ROUTE', 'MATCH', 'WORKLOAD', 'UPSTREAM', 'SLEEP', 'STATE', 'SINCE', 'IN FLIGHT', 'HELD', 'LAST WAKE'],
      status.routes.map((r) => row(r, Date.now()))));
    for (const r of status.routes) if (r.reason) process.stdout.write(`${r.name}: ${r.reason}\n`);
    return EXIT.OK;
  } catch (err) {
    const code = KybernateError.is(err) ? err.code : 'KYB_ERR_INTERNAL';
    const message = err instanceof Error ? err.message : String(err);
    if (values.json) process.stdout.write(`${JSON.stringify({ ok: false, code, message })}\n`);
    else process.stderr.write(`kybernate: ${message}\n`);
    return code === 'KYB_ERR_UNAVAILABLE' ? EXIT.AGENT_NOT_RUNNING : EXIT.FAILED;
  }
}

function row(r: RouteStatus, now: number): string[] {
  const w = r.lastWake;
  const wake = w ? `${w.ok ? '' : 'FAILED '}${w.ms} ms from ${w.from}, ${age(new Date(w.at), now)} ago` : '-';
  return [r.name, `${r.host}${r.pathPrefix}`, `${r.namespace}/${r.id}`, r.upstream, r.sleepKind, r.state,
    `${age(new Date(r.since), now)} ago`, String(r.inFlight), String(r.held), wake];
}
