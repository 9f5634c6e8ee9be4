// The names of kybernate's Control service (proto/kybernate/shim/v1/control.proto) on a shim's socket, and
// the topics of the events its handlers publish: one definition for the shim that serves them and for
// every client (CLI, agent) that calls or subscribes.

/** The ttrpc service name of Control (package kybernate.shim.v1, service Control). */
export const CONTROL_SERVICE = 'kybernate.shim.v1.Control';

/** Published after a container's GPU state went to host memory and the container was frozen. */
export const TOPIC_SUSPENDED = '/kybernate/suspended';
/** Published after a suspended container was thawed and its GPU state given back. */
export const TOPIC_RESUMED = '/kybernate/resumed';
