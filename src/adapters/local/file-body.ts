import type { FileHandle } from 'node:fs/promises';
import type { ByteStream } from '../../ports/blob-store.js';

/**
 * The body of an object read from a local file: a web stream for every reader in core, and a
 * way around it for the one reader that matters most, node:http sending a blob to a client.
 *
 * Through the web stream each 256 KiB chunk is a fresh Buffer read on the thread pool, handed
 * through a promise per read to @hono/node-server, written to the socket and dropped: on a warm
 * pull the process spent more time collecting those buffers and settling those promises than
 * the kernel spent copying the bytes. `sendTo` (taken once, before anyone read the stream)
 * writes the same range straight from the file to the response through a few buffers that are
 * used again as soon as the socket has taken them, holding at most SEND_BUFFERS of them.
 */

/** Bytes of one read from the file. */
const READ_CHUNK_BYTES = 256 * 1024;
/** Bytes of one buffer of a direct send: fewer, larger socket writes and file reads. */
const SEND_CHUNK_BYTES = 512 * 1024;
/** Buffers a direct send holds: one being read while the others wait to be taken by the socket. */
const SEND_BUFFERS = 3;

const SEND = Symbol('outpost.fileSend');

/** What a direct send writes into: a node:http ServerResponse, or any stream with the same write. */
export interface SendTarget {
  readonly destroyed: boolean;
  write(chunk: Uint8Array, callback: (err?: Error | null) => void): boolean;
  end(): void;
  destroy(err?: Error): void;
  once(event: 'close', listener: () => void): unknown;
}

/** Whatever else ends a send when it closes (the connection under a queued response). */
interface Closes {
  readonly destroyed?: boolean;
  once(event: 'close', listener: () => void): unknown;
  off(event: 'close', listener: () => void): unknown;
}

type Sender = (out: SendTarget, connection?: Closes) => Promise<void>;

/**
 * Bytes [start, end) of the open `file` as a web stream that reads only when asked (high-water
 * mark 0, so an unread body costs no read), closing the file at the end, on cancel, or once the
 * body is sent directly.
 */
export function fileBody(file: FileHandle, start: number, end: number): ByteStream {
  let pos = start;
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    void file.close().catch(() => undefined);
  };
  const stream = new ReadableStream<Uint8Array>(
    {
      pull: async (controller) => {
        const want = Math.min(READ_CHUNK_BYTES, end - pos);
        if (want <= 0) {
          close();
          return controller.close();
        }
        try {
          const { bytesRead, buffer } = await file.read(Buffer.allocUnsafeSlow(want), 0, want, pos);
          if (bytesRead === 0) throw new Error(`the file ended at ${pos} of ${end} bytes`);
          pos += bytesRead;
          controller.enqueue(bytesRead === want ? buffer : buffer.subarray(0, bytesRead));
        } catch (err) {
          close();
          controller.error(err);
        }
      },
      cancel: close,
    },
    { highWaterMark: 0 },
  );
  let taken = false;
  const send: Sender = async (out, connection) => {
    try {
      await sendRange(file, pos, end, out, connection);
    } finally {
      close();
    }
  };
  Object.defineProperty(stream, SEND, {
    value: (): Sender | undefined => {
      // Once anything read the stream (or a previous take), only the stream has the bytes.
      if (taken || stream.locked || pos !== start) return undefined;
      taken = true;
      return send;
    },
  });
  return stream;
}

/**
 * The direct sender of `body` when it is an unread file body, claimed for the caller (the stream
 * must not be read afterwards); otherwise undefined and the stream is untouched.
 */
export function takeFileSend(body: ByteStream | null): Sender | undefined {
  const take = (body as (ByteStream & { [SEND]?: () => Sender | undefined }) | null)?.[SEND];
  return take?.();
}

/**
 * Writes [pos, end) of `file` to `out` and ends it; destroys `out` if the file fails or ends
 * early (the client sees the response cut, never a clean short body). Resolves when every
 * byte was handed to the socket or `out` closed first.
 */
async function sendRange(file: FileHandle, pos: number, end: number, out: SendTarget, connection: Closes | undefined): Promise<void> {
  const free: Buffer[] = [];
  let lent = 0;
  let gone = out.destroyed || connection?.destroyed === true;
  let wake: (() => void) | undefined;
  const wakeUp = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const onClose = () => {
    gone = true;
    wakeUp();
  };
  out.once('close', onClose);
  // Taken off at the end: a kept-alive connection carries many responses.
  connection?.once('close', onClose);
  const written = (buffer: Buffer) => (err?: Error | null) => {
    lent--;
    if (err) gone = true;
    else free.push(buffer);
    wakeUp();
  };
  try {
    while (pos < end && !gone) {
      if (free.length === 0 && lent >= SEND_BUFFERS) {
        await new Promise<void>((resolve) => (wake = resolve));
        continue;
      }
      // Sized by what is left, so a small blob takes a small buffer.
      const buffer = free.pop() ?? Buffer.allocUnsafeSlow(Math.min(SEND_CHUNK_BYTES, end - pos));
      const want = Math.min(buffer.byteLength, end - pos);
      const { bytesRead } = await file.read(buffer, 0, want, pos);
      if (bytesRead === 0) throw new Error(`the file ended at ${pos} of ${end} bytes`);
      pos += bytesRead;
      if (gone) break;
      lent++;
      out.write(bytesRead === buffer.byteLength ? buffer : buffer.subarray(0, bytesRead), written(buffer));
    }
    if (!gone) out.end();
  } catch (err) {
    out.destroy(err as Error);
  } finally {
    connection?.off('close', onClose);
  }
}
