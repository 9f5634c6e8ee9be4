// Where a command sends its request: to the node agent, or (suspend, resume, gpu-status only) straight to
// the container's shim, as before there was an agent. The agent is asked when one is named (--agent, or
// $KYBERNATE_AGENT) or when its default socket exists; --state-dir (containerd's, for the shim's address)
// asks for the direct path. Flags beat the environment, which beats the default.
import fs from 'node:fs';
import { AgentClient, AgentUnreachableError } from '../agent-api/client';
import { DEFAULT_AGENT_SOCKET } from '../agent-api/definition';
import { KybernateError, toStatus } from '../errors';
import { EXIT } from './exit-codes';

export type Target = { kind: 'agent'; socket: string } | { kind: 'direct' };

/** The agent's socket for a command that only works through the agent. */
export function agentSocket(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return flag ?? (env.KYBERNATE_AGENT || DEFAULT_AGENT_SOCKET);
}

/** Agent or direct, for the commands that can do both (see the file comment). */
export function pickTarget(flags: { agent?: string; stateDir?: string }, env: NodeJS.ProcessEnv = process.env): Target {
  if (flags.agent !== undefined) return { kind: 'agent', socket: flags.agent };
  if (flags.stateDir !== undefined) return { kind: 'direct' };
  if (env.KYBERNATE_AGENT) return { kind: 'agent', socket: env.KYBERNATE_AGENT };
  return fs.existsSync(DEFAULT_AGENT_SOCKET) ? { kind: 'agent', socket: DEFAULT_AGENT_SOCKET } : { kind: 'direct' };
}

/** Connects, runs `fn`, closes; fn's output is printed by the caller. */
export async function withAgent<T>(socket: string, fn: (agent: AgentClient) => Promise<T>): Promise<T> {
  const agent = new AgentClient({ address: socket });
  try {
    return await fn(agent);
  } finally {
    agent.close();
  }
}

/**
 * Prints a failure (stderr, or as JSON on stdout with --json) and returns its exit code: 3 when the agent
 * could not be reached, 1 for anything it answered.
 */
export function reportFailure(err: unknown, json: boolean, fields: Record<string, unknown> = {}): number {
  const message = err instanceof Error ? err.message : String(err);
  if (json) {
    const code = KybernateError.is(err) ? err.code : (err as { code?: unknown }).code;
    process.stdout.write(`${JSON.stringify({ ok: false, ...fields, error: message, code, status: toStatus(err).code }, null, 2)}\n`);
  } else {
    process.stderr.write(`kybernate: ${message}\n`);
  }
  return err instanceof AgentUnreachableError ? EXIT.AGENT_NOT_RUNNING : EXIT.FAILED;
}
