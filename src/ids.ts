// containerd's identifier rule (pkg/identifiers): namespaces, container and exec ids. They become path
// components (state dirs, bundles) and runc arguments, so only this alphabet is let through, by the
// shim and by the CLI alike.
import { KybernateError } from './errors';

/** 1-76 characters of A-Z a-z 0-9 _ . -, starting with a letter or digit (identifiers.Validate). */
export const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,75}$/;

/** Throws KYB_ERR_INVALID_ARGUMENT naming `kind` ("container id", "namespace", …) unless `value` is one. */
export function validateId(kind: string, value: string): void {
  if (!ID_PATTERN.test(value)) {
    throw new KybernateError('KYB_ERR_INVALID_ARGUMENT',
      `invalid ${kind} ${JSON.stringify(value)}: containerd identifiers are 1-76 of A-Z a-z 0-9 _ . - and start with a letter or digit`);
  }
}
