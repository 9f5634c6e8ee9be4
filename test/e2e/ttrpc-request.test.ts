// Malformed ttrpc Request envelopes against a running shim: the kybernate shim must answer them as
// containerd's runc shim (containerd/ttrpc's server) does, so both runtimes run the same expectations.
import { expect, it } from 'vitest';
import { Status } from '../../src/errors';
import { containerd } from '../../src/gen/proto';
import { describeMatrix } from './support/matrix';
import { LOOP, runDetached, shimSocket, shimTaskService } from './support/ctr';
import { REQUEST, RawConn, frame, requestFrame } from './support/ttrpc-raw';

describeMatrix('ttrpc request envelope', (ctx) => {
  it('a Request whose service field announces 23 bytes and carries 5 answers InvalidArgument (3), not Unimplemented', async () => {
    const id = ctx.id('truncreq');
    const { pid } = await runDetached(ctx.cd, ctx.rt.runtime, id, LOOP);
    const c = await RawConn.connect(shimSocket(ctx.cd, id));
    try {
      // protobuf: field 1 (service), length 23, then only "conta".
      await c.write(frame(1, REQUEST, Buffer.from('0a17636f6e7461', 'hex')));
      const bad = await c.response(1);
      expect(bad).toMatchObject({ code: Status.INVALID_ARGUMENT });
      expect(bad !== 'closed' && bad.message).toMatch(/^unmarshal request error: /);
      // The same connection goes on serving.
      const state = containerd.task.v2.StateRequest.encode({ id }).finish();
      await c.write(requestFrame(3, shimTaskService(ctx.cd, id), 'State', state));
      const ok = await c.response(3);
      if (ok === 'closed') throw new Error('shim closed the connection');
      expect(ok.code).toBe(Status.OK);
      expect(containerd.task.v2.StateResponse.decode(ok.payload).pid).toBe(pid);
    } finally {
      c.destroy();
    }
  });
});
