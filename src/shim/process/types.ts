// Plain types shared by the process model.

/** Process status names; they map 1:1 onto containerd.v1.types.Status. */
export type StatusName = 'created' | 'running' | 'paused' | 'stopped' | 'deleted';

export interface ExitInfo {
  /** Exit code, or 128 + signal for a process killed by a signal. */
  status: number;
  exitedAt: Date;
}

/** The operations a process state decides on. */
export interface ProcessOps {
  start(): Promise<void>;
  delete(): Promise<void>;
  pause(): Promise<void>;
  resume(): Promise<void>;
  update(resourcesJson: string): Promise<void>;
  kill(signal: number, all: boolean): Promise<void>;
}
