// The error table stays the one place codes are defined: every KYB_ERR_* code used anywhere in src/ or
// native/ is in it, and README documents each one.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES, KybernateError, Status, toStatus } from '../../src/errors';

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
});
