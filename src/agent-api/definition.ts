// The kybernate.agent.v1.Agent service as grpc-js sees it: one method table built from the generated
// protobufjs codecs (gen-proto runs with --no-service, so the table is written here), shared by the agent
// that serves it and by every client (CLI, later the activator and the controller).
import type * as grpc from '@grpc/grpc-js';
import type protobuf from 'protobufjs/minimal';
import { kybernate } from '../gen/proto';
import { strictReader } from '../ttrpc/request-codec';

const A = kybernate.agent.v1;

/** The service's full name; a method's path is `/${AGENT_SERVICE}/${method}`. */
export const AGENT_SERVICE = 'kybernate.agent.v1.Agent';
/** Trailing metadata key of every error the agent sends: its Kybernate code (KYB_ERR_...). */
export const KYB_CODE_KEY = 'kyb-code';
/** Requests above this size are refused with RESOURCE_EXHAUSTED before they are decoded. */
export const MAX_REQUEST_BYTES = 4 * 1024 * 1024;
/** Where the agent listens and the CLI looks by default. */
export const DEFAULT_AGENT_SOCKET = '/run/kybernate/agent.sock';

interface Codec<T> {
  encode(message: T): { finish(): Uint8Array };
  decode(reader: protobuf.Reader): T;
}

const toBuffer = (b: Uint8Array): Buffer => Buffer.from(b.buffer, b.byteOffset, b.byteLength);

function method<Req, Res>(name: string, req: Codec<Req>, res: Codec<Res>, responseStream = false): grpc.MethodDefinition<Req, Res> {
  return {
    path: `/${AGENT_SERVICE}/${name}`,
    requestStream: false,
    responseStream,
    requestSerialize: (m: Req) => toBuffer(req.encode(m).finish()),
    // Strict: protobufjs's Buffer reader would clamp a length past the end and hand on half a message.
    requestDeserialize: (b: Buffer) => req.decode(strictReader(b)),
    responseSerialize: (m: Res) => toBuffer(res.encode(m).finish()),
    responseDeserialize: (b: Buffer) => res.decode(strictReader(b)),
  };
}

type M = typeof kybernate.agent.v1;
/** The plain-object interface of a message (IListRequest for ListRequest): what callers build and read. */
type I<K extends keyof M> = M[K] extends { encode(m: infer T): unknown } ? T : never;

/** Each method's request and response message. */
export interface AgentMethods {
  List: [I<'ListRequest'>, I<'ListResponse'>];
  Get: [I<'GetRequest'>, I<'Workload'>];
  Suspend: [I<'OperationRequest'>, I<'OperationResult'>];
  Resume: [I<'OperationRequest'>, I<'OperationResult'>];
  Checkpoint: [I<'CheckpointRequest'>, I<'OperationResult'>];
  Restore: [I<'RestoreRequest'>, I<'OperationResult'>];
  ListSnapshots: [I<'ListSnapshotsRequest'>, I<'ListSnapshotsResponse'>];
  DeleteSnapshot: [I<'DeleteSnapshotRequest'>, I<'DeleteSnapshotResponse'>];
  MoveSnapshot: [I<'MoveSnapshotRequest'>, I<'MoveSnapshotResponse'>];
  VerifySnapshot: [I<'VerifySnapshotRequest'>, I<'VerifySnapshotResponse'>];
  PinSnapshot: [I<'PinSnapshotRequest'>, I<'PinSnapshotResponse'>];
  CollectGarbage: [I<'CollectGarbageRequest'>, I<'CollectGarbageResponse'>];
  Gpus: [I<'GpusRequest'>, I<'GpusResponse'>];
  Events: [I<'EventsRequest'>, I<'Event'>];
  Health: [I<'HealthRequest'>, I<'HealthResponse'>];
  Version: [I<'VersionRequest'>, I<'VersionResponse'>];
}
export type AgentMethod = keyof AgentMethods;
export type RequestOf<K extends AgentMethod> = AgentMethods[K][0];
export type ResponseOf<K extends AgentMethod> = AgentMethods[K][1];

/** Method name → definition; the keys are the handler names the server registers. */
export const agentDefinition: { [K in AgentMethod]: grpc.MethodDefinition<RequestOf<K>, ResponseOf<K>> } = {
  List: method('List', A.ListRequest, A.ListResponse),
  Get: method('Get', A.GetRequest, A.Workload),
  Suspend: method('Suspend', A.OperationRequest, A.OperationResult),
  Resume: method('Resume', A.OperationRequest, A.OperationResult),
  Checkpoint: method('Checkpoint', A.CheckpointRequest, A.OperationResult),
  Restore: method('Restore', A.RestoreRequest, A.OperationResult),
  ListSnapshots: method('ListSnapshots', A.ListSnapshotsRequest, A.ListSnapshotsResponse),
  DeleteSnapshot: method('DeleteSnapshot', A.DeleteSnapshotRequest, A.DeleteSnapshotResponse),
  MoveSnapshot: method('MoveSnapshot', A.MoveSnapshotRequest, A.MoveSnapshotResponse),
  VerifySnapshot: method('VerifySnapshot', A.VerifySnapshotRequest, A.VerifySnapshotResponse),
  PinSnapshot: method('PinSnapshot', A.PinSnapshotRequest, A.PinSnapshotResponse),
  CollectGarbage: method('CollectGarbage', A.CollectGarbageRequest, A.CollectGarbageResponse),
  Gpus: method('Gpus', A.GpusRequest, A.GpusResponse),
  Events: method('Events', A.EventsRequest, A.Event, true),
  Health: method('Health', A.HealthRequest, A.HealthResponse),
  Version: method('Version', A.VersionRequest, A.VersionResponse),
};
