/**
 * Web streams of Node Readables (an IncomingMessage of node:http, or of the AWS SDK's Node
 * request handler) that pass the Buffers the source emits on as they are. Node 20's
 * `Readable.toWeb`, which the SDK's `transformToWebStream` uses, copies every chunk into a new
 * Uint8Array. Duck-typed: no node: module reaches a Workers bundle through an importer.
 */

/** What webStreamOf needs of a Node Readable. */
export interface NodeReadable {
  on(event: 'data', listener: (chunk: Uint8Array) => void): unknown;
  on(event: 'end' | 'close', listener: () => void): unknown;
  on(event: 'error', listener: (err: Error) => void): unknown;
  pause(): unknown;
  resume(): unknown;
  destroy(err?: Error): unknown;
  /** An IncomingMessage's: every byte of the message has arrived (some may be unread). */
  readonly complete?: boolean;
  readonly destroyed?: boolean;
  readonly readableEnded?: boolean;
}

/** Whether `body` is a Node Readable (on Node, the SDK's object bodies are; on Workers, web streams). */
export function isNodeReadable(body: unknown): body is NodeReadable {
  const r = body as Partial<NodeReadable> | null | undefined;
  return typeof r?.on === 'function' && typeof r.pause === 'function' && typeof r.resume === 'function' && typeof r.destroy === 'function';
}

/**
 * What the stream queues ahead of its reader before the source is paused: a few of a socket's
 * 64 KiB reads, so a steady reader does not pause and resume the socket per chunk, while a slow
 * one holds at most this (plus one read and node:http's own 16 KiB).
 */
export const QUEUE_BYTES = 256 * 1024;

export interface WebStreamOptions {
  /** Whether the source has received every byte, so that its 'close' is no break (default: its `complete`, else whether it emitted 'end'). */
  complete?: () => boolean;
  /** Called once, when the stream ends, fails, or is cancelled. */
  settle?: () => void;
  /**
   * What a cancel does with the source. Default: a message received whole is read off, so its
   * connection goes back to the pool; any other is destroyed, which closes its connection.
   */
  cancel?: () => void;
}

/**
 * `source` as a web stream of the chunks it emits. A default stream, not a byte stream: a byte
 * stream's enqueue transfers (detaches) each chunk's ArrayBuffer, and the HTTP parser's slices
 * of one socket read share theirs (several chunks of a chunked body, or the head and the first
 * bytes). Backpressure: the source is paused when QUEUE_BYTES wait unread, and resumed when the
 * reader pulls. A source that errors, or closes before it has every byte, errors the stream
 * (never a clean short end). `fail` errors the stream from outside (an abort).
 */
export function webStreamOf(source: NodeReadable, o: WebStreamOptions = {}): { stream: ReadableStream<Uint8Array>; fail: (reason: unknown) => void } {
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  let done = false;
  let ended = false;
  const complete = o.complete ?? (() => source.complete ?? ended);
  const finish = (err?: unknown) => {
    if (done) return;
    done = true;
    o.settle?.();
    if (err === undefined) controller.close();
    else controller.error(err);
  };
  const stream = new ReadableStream<Uint8Array>(
    {
      start(c) {
        controller = c;
        source.on('data', (chunk) => {
          if (done) return;
          controller.enqueue(chunk);
          if ((controller.desiredSize ?? 0) <= 0) source.pause();
        });
        source.on('end', () => {
          ended = true;
          finish();
        });
        source.on('error', (err) => finish(new TypeError('terminated', { cause: err })));
        // 'close' without every byte: the connection went away mid-body.
        const broken = () => new TypeError('terminated', { cause: new Error('the connection closed before the body ended') });
        source.on('close', () => {
          if (!complete()) finish(broken());
        });
        // Gone before it was handed here: no event will come.
        if (source.destroyed && !source.readableEnded && !complete()) finish(broken());
      },
      pull() {
        source.resume();
      },
      cancel() {
        if (done) return;
        done = true;
        o.settle?.();
        if (o.cancel) o.cancel();
        else if (source.complete === true) source.resume();
        else source.destroy();
      },
    },
    { highWaterMark: QUEUE_BYTES, size: (chunk) => chunk.byteLength },
  );
  return { stream, fail: finish };
}
