import { describe, expect, it } from 'vitest';
import { containerd } from '../../src/gen/proto';
import { parseBootstrap } from '../../src/shim/manager/start';
import { parseFlags } from '../../src/shim/flags';

const flags = parseFlags(['-namespace', 'default', '-id', 'c1', '-address', '/run/c.sock', 'start']);

describe('start bootstrap parsing', () => {
  it('takes 2.3 BootstrapParams whose id and namespace match the flags', async () => {
    const opts = containerd.runc.v1.Options.encode({ binaryName: 'crun' }).finish();
    const bytes = containerd.runtime.bootstrap.v1.BootstrapParams.encode({
      instanceId: 'c1', namespace: 'default', logLevel: -4, socketDir: '/run/k/s',
      containerdTtrpcAddress: '/run/c.sock.ttrpc',
      extensions: [{ value: { type_url: 'containerd.runc.v1.Options', value: opts } }],
    }).finish();
    const b = await parseBootstrap(bytes, flags);
    expect(b).toMatchObject({ socketDir: '/run/k/s', ttrpcAddress: '/run/c.sock.ttrpc' });
    expect(b?.options?.typeUrl).toBe('containerd.runc.v1.Options');
    expect(containerd.runc.v1.Options.decode(b!.options!.value).binaryName).toBe('crun');
  });

  it('treats an Any of runtime options (1.6-2.2 stdin) as legacy, although it decodes as BootstrapParams', async () => {
    const any = Buffer.from([0x0a, 0x1a, ...Buffer.from('containerd.runc.v1.Options'), 0x12, 0x00]);
    expect(() => containerd.runtime.bootstrap.v1.BootstrapParams.decode(any)).not.toThrow();
    expect(await parseBootstrap(any, flags)).toBeUndefined();
  });

  it('ignores empty stdin and garbage', async () => {
    expect(await parseBootstrap(new Uint8Array(), flags)).toBeUndefined();
    expect(await parseBootstrap(Buffer.from([0xff, 0xff, 0xff]), flags)).toBeUndefined();
  });
});
