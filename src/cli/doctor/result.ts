// What one doctor check reports. Its own module so that checks.ts (which runs every check) and the
// checks that live in their own files (shim-binary.ts) share the type without importing each other.

export type Status = 'OK' | 'WARN' | 'FAIL';

export interface CheckResult {
  name: string;
  status: Status;
  value: string;
  fix?: string;
  required: boolean;
  /** Machine-readable details (versions as numbers, lists). */
  data?: Record<string, unknown>;
}
