// The error table stays the one place codes are defined: every KYB_ERR_* code used anywhere in src/ or
// native/ is in it, and README documents each one.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES, KybernateError, Status, fromStatus, toStatus } from '../../src/errors';

const root = path.resolve(__dirname, '../..');

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return e.name === 'gen' ? [] : sources(p);
    return /\.(ts|cc|h)$/.test(e.name) ? [p] : [];
  });
}

describe('error codes', () => {
  it('every code used in src/ and native/ is in the table', () => {
    const used = new Set<string>();
    for (const f of [...sources(path.join(root, 'src')), ...sources(path.join(root, 'native'))]) {
      for (const m of fs.readFileSync(f, 'utf8').matchAll(/KYB_ERR_[A-Z0-9_]*[A-Z0-9]/g)) used.add(m[0]);
    }
    const missing = [...used].filter((c) => !(c in ERROR_CODES));
    expect(missing).toEqual([]);
  });

  it('README documents every code in the table', () => {
    const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
    expect(Object.keys(ERROR_CODES).filter((c) => !readme.includes(`| ${c} |`))).toEqual([]);
  });

  it('maps our errors, addon errors and system errors to gRPC statuses in one place', () => {
    expect(toStatus(new KybernateError('KYB_ERR_NOT_FOUND', 'x')).code).toBe(Status.NOT_FOUND);
    expect(toStatus(Object.assign(new Error('no driver'), { code: 'KYB_ERR_CUDA_NO_DRIVER' })).code).toBe(Status.FAILED_PRECONDITION);
    expect(toStatus(Object.assign(new Error('gone'), { code: 'ENOENT' })).code).toBe(Status.NOT_FOUND);
    expect(toStatus(new Error('boom'))).toEqual({ code: Status.UNKNOWN, message: 'boom' });
  });

  it('maps a gRPC status from another server (containerd) back to a code, by status only', () => {
    // The inverse of the table where it is one-to-one.
    for (const code of ['KYB_ERR_CANCELLED', 'KYB_ERR_INVALID_ARGUMENT', 'KYB_ERR_DEADLINE', 'KYB_ERR_NOT_FOUND',
      'KYB_ERR_ALREADY_EXISTS', 'KYB_ERR_PERMISSION', 'KYB_ERR_RESOURCE_EXHAUSTED', 'KYB_ERR_FAILED_PRECONDITION',
      'KYB_ERR_UNIMPLEMENTED', 'KYB_ERR_UNAVAILABLE', 'KYB_ERR_RUNTIME', 'KYB_ERR_INTERNAL'] as const) {
      expect(fromStatus(ERROR_CODES[code]), code).toBe(code);
    }
    expect(fromStatus(Status.ABORTED)).toBe('KYB_ERR_FAILED_PRECONDITION');
    expect(fromStatus(Status.OUT_OF_RANGE)).toBe('KYB_ERR_INVALID_ARGUMENT');
    expect(fromStatus(Status.UNAUTHENTICATED)).toBe('KYB_ERR_PERMISSION');
    expect(fromStatus(Status.DATA_LOSS)).toBe('KYB_ERR_RUNTIME');
    expect(fromStatus(Status.OK)).toBe('KYB_ERR_RUNTIME');
    expect(fromStatus(99)).toBe('KYB_ERR_RUNTIME');
  });
});
