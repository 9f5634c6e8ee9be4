// Command-line pieces the agent commands share, each a UsageError (exit 2) when wrong: ids checked by
// containerd's rule, durations in seconds, -n NS / -A.
import { validateId } from '../ids';
import { DEFAULT_NAMESPACE } from '../shim-client/client';
import { UsageError } from './usage-error';

/** `value` if it is a containerd identifier; a usage error naming `kind` otherwise. */
export function checkId(kind: string, value: string): string {
  try {
    validateId(kind, value);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  return value;
}

/** `--flag SECONDS` in milliseconds (undefined when not given); a positive number of seconds only. */
export function seconds(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const s = Number(v);
  if (!Number.isFinite(s) || s <= 0) throw new UsageError(`--${flag} must be a positive number of seconds, not ${v}`);
  return Math.round(s * 1000);
}

/** The namespace of `-n NS` (checked), '' for `-A` (every namespace), else "default". */
export function namespaceOf(cmd: string, values: { namespace?: string; 'all-namespaces'?: boolean }): string {
  if (values.namespace !== undefined && values['all-namespaces']) throw new UsageError(`${cmd}: -n and --all-namespaces exclude each other`);
  return values['all-namespaces'] ? '' : checkId('namespace', values.namespace ?? DEFAULT_NAMESPACE);
}

/** A snapshot reference as the agent takes it: its id (sha256:<hex>) or at least 4 of its hex digits. */
export function checkSnapshotRef(ref: string): string {
  if (!/^(sha256:)?[0-9a-f]{4,64}$/.test(ref)) {
    throw new UsageError(`invalid snapshot ${JSON.stringify(ref)}: give its id (sha256:...) or at least 4 of its hex digits`);
  }
  return ref;
}
