// Public surface of ttrpc-ts.
export { TtrpcClient, type CallOptions, type ClientOptions, type Decoder, type Encoder } from './client';
export { TtrpcServer, type ServerOptions } from './server';
export type { CallContext, Logger, RawHandler } from './server-connection';
export { registerService, rawHandlers, unary, type MethodDef, type ServiceTable } from './service';
export { FrameDecoder, ReadState, type DecodeResult } from './frame-decoder';
export { encodeFrame, encodeHeader } from './frame-encoder';
export { Flags, HEADER_LENGTH, MAX_MESSAGE_SIZE, MessageType, type Frame, type FrameHeader, type Metadata } from './protocol';
