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

/** Bytes [start, end) of one file of a body: already open, or opened when the body reaches it. */
export interface FileSegment {
  file: FileHandle | (() => Promise<FileHandle>);
  start: number;
  end: number;
}

/**
 * Bytes [start, end) of the open `file` as a web stream that reads only when asked (high-water
 * mark 0, so an unread body costs no read), closing the file at the end, on cancel, or once the
 * body is sent directly.
 */
export function fileBody(file: FileHandle, start: number, end: number): ByteStream {
  return segmentsBody([{ file, start, end }]);
}

/**
 * The bytes of `segments`, one file after another, as fileBody's are of one file: each file is
 * opened when the body reaches it (a file that is gone then fails the body: never a clean short
 * one) and closed when the body leaves it, is cancelled, or is sent.
 */
export function segmentsBody(segments: FileSegment[]): ByteStream {
  let i = 0;
  let pos = segments[0]?.start ?? 0;
  /** The open file of segment i, once the body reached it. */
  let file: FileHandle | undefined;
  /** Files given open that the body has not taken as `file` yet: each is closed once, whatever happens. */
  const given = new Set<FileHandle>();
  for (const s of segments) if (typeof s.file !== 'function') given.add(s.file);
  let closed = false;
  const release = (f: FileHandle | undefined) => {
    if (f) void f.close().catch(() => undefined);
  };
  const close = () => {
    if (closed) return;
    closed = true;
    release(file);
    file = undefined;
    for (const f of given) release(f);
    given.clear();
  };
  /** The file of the current segment, opened if need be; undefined past the last one (or once closed). */
  const current = async (): Promise<FileHandle | undefined> => {
    for (;;) {
      const segment = segments[i];
      if (!segment || closed) return undefined;
      if (pos < segment.end) {
        if (file) return file;
        if (typeof segment.file !== 'function') {
          given.delete(segment.file);
          return (file = segment.file);
        }
        const opened = await segment.file();
        // Cancelled while the file opened: nobody will close it but us.
        if (closed) {
          release(opened);
          return undefined;
        }
        return (file = opened);
      }
      // Done with this segment (or it is empty): its file, whether taken or given, is closed now.
      release(file);
      file = undefined;
      if (typeof segment.file !== 'function' && given.delete(segment.file)) release(segment.file);
      i++;
      pos = segments[i]?.start ?? pos;
    }
  };
  const stream = new ReadableStream<Uint8Array>(
    {
      pull: async (controller) => {
        try {
          const f = await current();
          if (!f) {
            close();
            return controller.close();
          }
          const end = segments[i]!.end;
          const want = Math.min(READ_CHUNK_BYTES, end - pos);
          const { bytesRead, buffer } = await f.read(Buffer.allocUnsafeSlow(want), 0, want, pos);
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
    const sending = new RangeSender(out, connection);
    try {
      for (let f = await current(); f && !sending.gone; f = await current()) {
        pos = await sending.send(f, pos, segments[i]!.end);
      }
      // Closed before the last segment (cancelled meanwhile): cut, never a clean short body.
      if (!sending.gone && i < segments.length) throw new Error('the body was closed before it was sent');
      sending.finish();
    } catch (err) {
      sending.fail(err);
    } finally {
      sending.release();
      close();
    }
  };
  Object.defineProperty(stream, SEND, {
    value: (): Sender | undefined => {
      // Once anything read the stream (or a previous take), only the stream has the bytes.
      if (taken || stream.locked || closed || i !== 0 || pos !== (segments[0]?.start ?? 0)) return undefined;
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
 * Writes ranges of files to `out` through at most SEND_BUFFERS buffers, used again as soon as
 * the socket has taken them. `finish` ends `out`; `fail` destroys it (a file failed or ended
 * early: the client sees the response cut, never a clean short body). `gone` once `out` (or the
 * connection under it) closed first.
 */
class RangeSender {
  gone: boolean;
  private readonly free: Buffer[] = [];
  private lent = 0;
  private wake: (() => void) | undefined;
  private readonly onClose = () => {
    this.gone = true;
    this.wakeUp();
  };

  constructor(
    private readonly out: SendTarget,
    private readonly connection: Closes | undefined,
  ) {
    this.gone = out.destroyed || connection?.destroyed === true;
    out.once('close', this.onClose);
    // Taken off at the end (release): a kept-alive connection carries many responses.
    connection?.once('close', this.onClose);
  }

  /** Writes [pos, end) of `file`; returns where it stopped (`end`, or earlier once gone). */
  async send(file: FileHandle, pos: number, end: number): Promise<number> {
    while (pos < end && !this.gone) {
      if (this.free.length === 0 && this.lent >= SEND_BUFFERS) {
        await new Promise<void>((resolve) => (this.wake = resolve));
        continue;
      }
      // Sized by what is left, so a small blob takes a small buffer.
      const buffer = this.free.pop() ?? Buffer.allocUnsafeSlow(Math.min(SEND_CHUNK_BYTES, end - pos));
      const want = Math.min(buffer.byteLength, end - pos);
      const { bytesRead } = await file.read(buffer, 0, want, pos);
      if (bytesRead === 0) throw new Error(`the file ended at ${pos} of ${end} bytes`);
      pos += bytesRead;
      if (this.gone) break;
      this.lent++;
      this.out.write(bytesRead === buffer.byteLength ? buffer : buffer.subarray(0, bytesRead), this.written(buffer));
    }
    return pos;
  }

  finish(): void {
    if (!this.gone) this.out.end();
  }

  fail(err: unknown): void {
    this.out.destroy(err as Error);
  }

  release(): void {
    this.connection?.off('close', this.onClose);
  }

  private written(buffer: Buffer) {
    return (err?: Error | null) => {
      this.lent--;
      if (err) this.gone = true;
      else this.free.push(buffer);
      this.wakeUp();
    };
  }

  private wakeUp(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }
}
