import type { Readable } from 'node:stream';

/**
 * Resumes the socket under a finished postgres.js `COPY ... TO STDOUT` stream. postgres.js
 * pauses its socket when the stream's buffer is full and resumes it from the stream's `_read`;
 * when the last CopyData and the CopyDone arrive in one socket chunk while the buffer is full,
 * the stream ends with the socket still paused, and the next query on that connection waits
 * forever (porsager/postgres#499, fix proposed in porsager/postgres#1016, not released). A
 * consumer that awaits other work between chunks hits it. Call once the stream has ended (or
 * failed); resuming a socket that flows is a no-op.
 */
export function resumeAfterCopy(stream: Readable): void {
  const read = (stream as unknown as { _read?: (n: number) => void })._read;
  try {
    read?.call(stream, 0);
  } catch {
    // not a postgres.js COPY stream: nothing to resume
  }
}
