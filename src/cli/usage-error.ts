// The error a command throws for a wrong command line. Its own module so that the commands and the
// dispatcher (run.ts, which imports the commands) can both use it without importing each other.

/** A wrong command line: printed with the usage, exit code 2. */
export class UsageError extends Error {}
