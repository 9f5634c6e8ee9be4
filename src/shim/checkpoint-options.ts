// CheckpointOptions as containerd sends them (Task.Checkpoint's options), parsed and validated, and the
// CRIU flags a restore reads back from the options a snapshot's manifest recorded. Two types arrive:
// containerd.runc.v1.CheckpointOptions, and the legacy containerd.linux.runc.CheckpointOptions that
// containerd 1.6/1.7 clients build for runtimes not named io.containerd.runc.* (WithCheckpointImagePath);
// they carry the same fields (with work_path and image_path numbered the other way round).
//
// A request without options is ambiguous. containerd's runc shim reads it as "leave running", and so do
// CRI (it sends options only to io.containerd.runc.v2, and wants the container left running) and ctr 1.x
// (it sends none to other runtime names, --exit or not). Docker Engine sends CheckpointOptions{Exit} only
// to runtimes it knows as runc's (daemon.json runtimeType io.containerd.runc.v2, or a `path` runtime:
// moby libcontainerd/remote/client.go getCheckpointOptions); to any other runtime type `docker checkpoint
// create` and `--leave-running` send the same request, without options, and Docker documents the first
// as exiting. checkpointDefault() decides per container what such a request means.
import * as path from 'node:path';
import { KybernateError } from '../errors';
import { containerd } from '../gen/proto';
import { CGROUPS_MODES, typeName } from './options';
import type { CriuFlags } from './runc';

/** CheckpointOptions as the shim applies them; without options, `exit` is the container's checkpointDefault(). */
export interface ParsedCheckpointOptions extends CriuFlags {
  exit: boolean;
  emptyNamespaces: string[];
  workPath?: string;
  parentPath?: string;
  /**
   * image_path as sent. containerd reads it itself (runc runtime names: it then skips the content
   * store); the dump goes to CheckpointTaskRequest.path, as containerd's runc shim does it.
   */
  imagePath?: string;
}

const CHECKPOINT_OPTIONS = 'containerd.runc.v1.CheckpointOptions';
const LEGACY_CHECKPOINT_OPTIONS = 'containerd.linux.runc.CheckpointOptions';

/** The fields both types share (the legacy one has no parent_path). */
type AnyCheckpointOptions = Omit<containerd.runc.v1.CheckpointOptions, 'parentPath' | 'toJSON'> & { parentPath?: string };

function decodeCheckpointOptions(name: string, value: Uint8Array): AnyCheckpointOptions {
  try {
    if (name === LEGACY_CHECKPOINT_OPTIONS) return containerd.linux.runc.CheckpointOptions.decode(value);
    return containerd.runc.v1.CheckpointOptions.decode(value);
  } catch (err) {
    throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `invalid checkpoint options: ${(err as Error).message}`, { cause: err });
  }
}
const NAMESPACE_NAMES = new Set(['network', 'pid', 'ipc', 'uts', 'mount', 'user', 'cgroup', 'time']);

/** The annotation that says what a checkpoint request without options means for a container. */
export const CHECKPOINT_DEFAULT_ANNOTATION = 'io.kybernate.checkpoint.default';
/** The containerd namespace Docker Engine keeps its containers in (dockerd --containerd-namespace; default moby). */
export const DOCKER_NAMESPACE = 'moby';

export interface CheckpointDefault {
  exit: boolean;
  /** Why, for the log. */
  reason: string;
}

/**
 * What a checkpoint request without options means for a container in `namespace` with these OCI
 * annotations: the annotation's value (exit or leave-running) when it is set; else exit in Docker's
 * namespace (Docker's documented default, which it cannot send to a non-runc runtime) and leave running
 * everywhere else (containerd's runc shim, CRI, ctr 1.x). An invalid annotation is refused.
 */
export function checkpointDefault(namespace: string, annotations: Record<string, unknown>): CheckpointDefault {
  const v = annotations[CHECKPOINT_DEFAULT_ANNOTATION];
  if (v === 'exit' || v === 'leave-running') return { exit: v === 'exit', reason: `annotation ${CHECKPOINT_DEFAULT_ANNOTATION}=${v}` };
  if (v !== undefined) {
    throw new KybernateError('KYB_ERR_INVALID_ARGUMENT',
      `invalid annotation ${CHECKPOINT_DEFAULT_ANNOTATION}=${JSON.stringify(v)}: want exit or leave-running`);
  }
  if (namespace === DOCKER_NAMESPACE) {
    return { exit: true, reason: `namespace ${DOCKER_NAMESPACE} (Docker Engine, which sends no options to non-runc runtimes for either form)` };
  }
  return { exit: false, reason: 'no options: leave running, as containerd\'s runc shim does' };
}

export function parseCheckpointOptions(any: { type_url?: string | null; value?: Uint8Array | null } | null | undefined,
  withoutOptions: { exit: boolean } = { exit: false }): ParsedCheckpointOptions {
  const out: ParsedCheckpointOptions = { exit: false, emptyNamespaces: [] };
  if (!any?.type_url) return { ...out, exit: withoutOptions.exit };
  const name = typeName(any.type_url);
  if (name !== CHECKPOINT_OPTIONS && name !== LEGACY_CHECKPOINT_OPTIONS) {
    throw new KybernateError('KYB_ERR_INVALID_ARGUMENT',
      `invalid checkpoint options type ${any.type_url} (want ${CHECKPOINT_OPTIONS} or ${LEGACY_CHECKPOINT_OPTIONS})`);
  }
  const o = decodeCheckpointOptions(name, any.value ?? new Uint8Array());
  for (const ns of o.emptyNamespaces) {
    if (!NAMESPACE_NAMES.has(ns)) throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `invalid empty namespace ${JSON.stringify(ns)}`);
  }
  if (o.cgroupsMode && !CGROUPS_MODES.includes(o.cgroupsMode)) {
    throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `invalid cgroups mode ${JSON.stringify(o.cgroupsMode)}`);
  }
  for (const [what, p] of [['work path', o.workPath], ['parent path', o.parentPath]] as const) {
    if (p && !path.isAbsolute(p)) throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `checkpoint ${what} must be absolute: ${JSON.stringify(p)}`);
  }
  out.exit = o.exit;
  out.tcpEstablished = o.openTcp;
  out.extUnixSk = o.externalUnixSockets;
  out.shellJob = o.terminal;
  out.fileLocks = o.fileLocks;
  out.emptyNamespaces = [...o.emptyNamespaces];
  if (o.cgroupsMode) out.manageCgroupsMode = o.cgroupsMode;
  if (o.workPath) out.workPath = o.workPath;
  if (o.parentPath) out.parentPath = o.parentPath;
  if (o.imagePath) out.imagePath = o.imagePath;
  return out;
}

/**
 * The options as the manifest records them, named as in CheckpointOptions. criuFlagsOf reads them back:
 * a restore must repeat the CRIU flags the dump was made with.
 */
export function manifestOptions(opts: ParsedCheckpointOptions): Record<string, unknown> {
  return {
    exit: opts.exit, openTcp: !!opts.tcpEstablished, externalUnixSockets: !!opts.extUnixSk, terminal: !!opts.shellJob,
    fileLocks: !!opts.fileLocks, emptyNamespaces: opts.emptyNamespaces, cgroupsMode: opts.manageCgroupsMode ?? '',
  };
}

export function criuFlagsOf(o: Record<string, unknown>): CriuFlags {
  const flags: CriuFlags = {
    tcpEstablished: o.openTcp === true, extUnixSk: o.externalUnixSockets === true, shellJob: o.terminal === true,
    fileLocks: o.fileLocks === true,
  };
  if (typeof o.cgroupsMode === 'string' && o.cgroupsMode) flags.manageCgroupsMode = o.cgroupsMode;
  return flags;
}

