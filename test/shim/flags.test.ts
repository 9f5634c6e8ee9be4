import { describe, expect, it } from 'vitest';
import { parseFlags } from '../../src/shim/flags';
import { groupOf, socketAddress, socketPath } from '../../src/shim/address';

describe('shim flags', () => {
  it('parses containerd 1.6-2.x start argv', () => {
    const f = parseFlags(['-namespace', 'default', '-address', '/run/containerd/containerd.sock', '-publish-binary',
      '/usr/bin/containerd', '-id', 'redis', '-debug', 'start']);
    expect(f).toMatchObject({ namespace: 'default', id: 'redis', address: '/run/containerd/containerd.sock',
      publishBinary: '/usr/bin/containerd', debug: true, action: 'start' });
  });

  it('accepts --x=v, -x=v, boolean values and unknown flags', () => {
    const f = parseFlags(['--namespace=k8s.io', '-id=c1', '-debug=false', '-unknown-flag', 'value', '-bundle', '/b', 'delete']);
    expect(f).toMatchObject({ namespace: 'k8s.io', id: 'c1', debug: false, bundle: '/b', action: 'delete' });
  });

  it('knows -v and -info without an action', () => {
    expect(parseFlags(['-v']).version).toBe(true);
    expect(parseFlags(['-info']).info).toBe(true);
    expect(parseFlags(['-v']).action).toBe('');
  });
});

describe('socket address', () => {
  it('matches the naming of containerd Go shims (sha256 of address/ns/group)', () => {
    expect(socketAddress('/run/containerd/containerd.sock', 'default', 'redis'))
      .toBe('unix:///run/containerd/s/f6b99128c07bdbd0902363ba979c22f8ef053e683a7ce24dd016a1ab17092c33');
  });

  it('groups by our annotation, then runc group, then the CRI sandbox id', () => {
    expect(groupOf('c1', { 'io.kubernetes.cri.sandbox-id': 'pod', 'io.kybernate.group': 'g' })).toBe('g');
    expect(groupOf('c1', { 'io.kubernetes.cri.sandbox-id': 'pod' })).toBe('pod');
    expect(groupOf('c1', { 'io.containerd.runc.v2.group': 'rg', 'io.kubernetes.cri.sandbox-id': 'pod' })).toBe('rg');
    expect(groupOf('c1', undefined)).toBe('c1');
  });

  it('only dials unix sockets', () => {
    expect(socketPath('unix:///run/x')).toBe('/run/x');
    expect(() => socketPath('tcp://1.2.3.4:5')).toThrow(/unsupported/);
  });
});
