// containerd's identifier rule, one definition for the shim and the CLI (src/ids.ts).
import { describe, expect, it } from 'vitest';
import { KybernateError } from '../../src/errors';
import { validateId } from '../../src/ids';

describe('validateId', () => {
  it('accepts containerd identifiers: 1-76 of A-Z a-z 0-9 _ . -, a letter or digit first', () => {
    for (const id of ['a', '0', 'web-1', 'k8s.io', 'A_b.c-d', 'x'.repeat(76)]) {
      expect(() => validateId('container id', id)).not.toThrow();
    }
  });

  it('rejects anything else with KYB_ERR_INVALID_ARGUMENT naming the kind and the value', () => {
    for (const id of ['', '.hidden', '-x', '_x', 'a/b', '../etc', 'a b', 'a\0b', 'é', 'x'.repeat(77), 'a\n']) {
      let err: unknown;
      try {
        validateId('namespace', id);
      } catch (e) {
        err = e;
      }
      expect(KybernateError.is(err) && err.code).toBe('KYB_ERR_INVALID_ARGUMENT');
      expect((err as Error).message).toContain(`invalid namespace ${JSON.stringify(id)}`);
    }
  });
});
