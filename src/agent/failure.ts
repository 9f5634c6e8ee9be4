// Any thrown value as a KybernateError with a code from the table, so that every failure the agent
// answers, counts or publishes has one: ours as they are; the addon's by their table code; a shim's ttrpc
// status (StatusError) and system errors through toStatus/fromStatus, by status and errno, never by text;
// anything else is a bug (KYB_ERR_INTERNAL).
import { ERROR_CODES, KybernateError, Status, StatusError, fromStatus, toStatus, type ErrorCode } from '../errors';

export function asKybernateError(err: unknown): KybernateError {
  if (KybernateError.is(err)) return err;
  const message = err instanceof Error ? err.message : String(err);
  const tableCode = (err as { code?: unknown } | undefined)?.code;
  if (typeof tableCode === 'string' && tableCode in ERROR_CODES) return new KybernateError(tableCode as ErrorCode, message, { cause: err });
  const { code } = toStatus(err);
  if (err instanceof StatusError || code !== Status.UNKNOWN) return new KybernateError(fromStatus(code), message, { cause: err });
  return new KybernateError('KYB_ERR_INTERNAL', message, { cause: err });
}
