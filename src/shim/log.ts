// Shim logs go to the bundle's `log` FIFO, which containerd copies to its own log. While containerd is down
// nobody reads it: the FIFO is opened non-blocking and a line that does not fit is dropped, so logging can
// never stall the event loop.
import * as fs from 'node:fs';
import pino, { type Logger } from 'pino';

class NonBlockingFifo {
  dropped = 0;
  constructor(private readonly fd: number) {}
  write(line: string): void {
    try {
      fs.writeSync(this.fd, line);
    } catch {
      this.dropped++; // EAGAIN (nobody reads) or EPIPE (reader gone): the line is lost, the shim is not
    }
  }
}

/** Opens `<bundle>/log`; without a reader or FIFO the logger writes nowhere. */
export function openLogger(logFifo: string, debug: boolean, bindings: Record<string, string>): Logger {
  let fd = -1;
  try {
    fd = fs.openSync(logFifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  } catch {
    fd = -1;
  }
  const dest = fd >= 0 ? new NonBlockingFifo(fd) : { write: (_: string) => undefined };
  return pino({ level: debug ? 'debug' : 'info', base: { runtime: 'io.containerd.kybernate.v2', ...bindings } }, dest);
}
