// Wiring only: the Control service's methods with their wire types.
import { kybernate } from '../gen/proto';
import { registerService, unary, type ServiceTable, type TtrpcServer } from '../ttrpc';
import type { ControlService } from './control';
import { CONTROL_SERVICE } from '../shim-client/control';

const C = kybernate.shim.v1;

export function registerControlService(server: TtrpcServer, s: ControlService): void {
  const table: ServiceTable = {
    Suspend: unary(C.SuspendRequest, C.SuspendResponse, (r) => s.suspend(r)),
    Resume: unary(C.ResumeRequest, C.ResumeResponse, (r) => s.resume(r)),
    Status: unary(C.StatusRequest, C.StatusResponse, (r) => s.status(r)),
  };
  registerService(server, CONTROL_SERVICE, table);
}
