// The CLI's exit codes, for scripts: one meaning each, the same for every command.
export const EXIT = {
  OK: 0,
  /** The operation (or a check) failed; the message says why. */
  FAILED: 1,
  /** The command line was wrong; the usage follows the message. */
  USAGE: 2,
  /** The command needs the node agent (or the activator), and none answers at its socket. */
  AGENT_NOT_RUNNING: 3,
} as const;
