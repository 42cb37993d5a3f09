import type { Http2Bindings, HttpBindings } from '@hono/node-server';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import { IncomingMessage, ServerResponse, type Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Context } from 'hono';
import { takeFileSend } from '../adapters/local/file-body.js';
import type { ConnectionInfo } from '../http/access-log.js';

/**
 * What Outpost needs from node:http beyond serving: the facts the access log wants about each
 * connection, and a drain for graceful shutdown.
 */

function bindings(c: Context): Partial<HttpBindings> | undefined {
  return c.env as Partial<HttpBindings> | undefined;
}

/** The header block node:http wrote (private, as morgan and on-headers read it): latin1, so its length is its bytes. */
function headerBytes(res: ServerResponse): number {
  const header = (res as ServerResponse & { _header?: unknown })._header;
  return typeof header === 'string' ? header.length : 0;
}

/**
 * The access log on Node: the socket's peer address, and the end of the response as node:http
 * reports it ('close': after 'finish' when the last byte was handed to the socket, or when the
 * connection closed first). The body's bytes are what the socket took while this response was
 * its own (HTTP/1.1 answers one request at a time on a connection) minus the status line and
 * headers, or for a finished answer with a Content-Length, that length; a chunked answer's
 * framing counts too (a few bytes per chunk). Nothing is added to the body path:
 * wrapping the response's write() per request was measured to triple the garbage collector's
 * work on small requests.
 */
export const nodeConnection: ConnectionInfo = {
  remoteAddress: (c) => bindings(c)?.incoming?.socket?.remoteAddress,
  sentTarget: (c) => bindings(c)?.incoming?.url,
  onResponseEnd(c, end) {
    const outgoing = bindings(c)?.outgoing;
    if (!outgoing || typeof outgoing.on !== 'function') return false;
    // The connection closed while the handler worked (a client gone mid-upload, a shutdown cut).
    if (outgoing.destroyed) {
      end({ bytes: 0, finished: false });
      return true;
    }
    // Null for an answer queued behind another on a pipelined connection: its bytes count 0.
    const socket = outgoing.socket;
    const before = socket?.bytesWritten ?? 0;
    outgoing.on('close', () => {
      const finished = outgoing.writableFinished;
      // Finished with a declared length: exactly that many (Node refuses to send more).
      const declared = Number(outgoing.getHeader('content-length') ?? NaN);
      if (finished && Number.isSafeInteger(declared) && c.req.method !== 'HEAD') return end({ bytes: declared, finished });
      const sent = socket ? socket.bytesWritten - before : 0;
      end({ bytes: Math.max(0, sent - headerBytes(outgoing)), finished });
    });
    return true;
  },
  requestBody(c) {
    const incoming = bindings(c)?.incoming;
    if (!(incoming instanceof IncomingMessage) || c.req.method === 'GET' || c.req.method === 'HEAD') return undefined;
    const held = incoming as IncomingMessage & { [BODY]?: ReadableStream<Uint8Array> };
    return (held[BODY] ??= incomingBody(incoming));
  },
};

const BODY = Symbol('outpost.requestBody');
/** What the body stream holds before it pauses the socket: a few of its 64 KiB reads. */
const BODY_HIGH_WATER_BYTES = 256 * 1024;

/**
 * The body of `incoming` as a web stream of the socket's own Buffers. @hono/node-server's
 * Readable.toWeb copies every chunk into a new Uint8Array (about a third of a push's CPU went
 * to that and its two layers of streams, bench:cloud); Outpost's readers only read the bytes
 * (hash, copy into a part, write to a file), so they can have the originals. Backpressure as
 * in toWeb: the socket is paused while the queue is full and resumed on the next pull. A client
 * that goes away before the end errors the stream (a push never commits a prefix); cancelling
 * stops reading and leaves the rest to the adapter, which drains or closes the connection.
 */
function incomingBody(incoming: IncomingMessage): ReadableStream<Uint8Array> {
  let done = false;
  const detach = () => {
    done = true;
    incoming.off('data', onData);
    incoming.off('end', onEnd);
    incoming.off('error', onError);
    incoming.off('close', onClose);
  };
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  const onData = (chunk: Buffer) => {
    controller.enqueue(chunk);
    if ((controller.desiredSize ?? 0) <= 0) incoming.pause();
  };
  const onEnd = () => {
    detach();
    controller.close();
  };
  const onError = (err: Error) => {
    detach();
    controller.error(err);
  };
  // 'close' without 'end': the connection went before the body was whole.
  const onClose = () => {
    if (!done) onError(new Error('the client closed the connection before the request body ended'));
  };
  return new ReadableStream<Uint8Array>(
    {
      start(c) {
        controller = c;
        if (incoming.readableEnded) return c.close();
        // Gone before anyone read the body (a client that left while the request was being
        // authorised): its 'close' has fired already and would never reach the listeners below.
        if (incoming.destroyed || incoming.errored) return c.error(incoming.errored ?? new Error('the client closed the connection before the request body ended'));
        // Read by something else first: what is left is not the whole body.
        if (incoming.readableDidRead) return c.error(new Error('the request body was partly read elsewhere'));
        incoming.on('data', onData);
        incoming.once('end', onEnd);
        incoming.once('error', onError);
        incoming.once('close', onClose);
      },
      pull() {
        if (!done) incoming.resume();
      },
      cancel() {
        detach();
        incoming.pause();
      },
    },
    { highWaterMark: BODY_HIGH_WATER_BYTES, size: (chunk) => chunk.byteLength },
  );
}

type Fetch = (req: Request, env: HttpBindings | Http2Bindings) => Response | Promise<Response>;

/**
 * The app's fetch, with blob bodies read from local files written to the socket directly
 * (adapters/local/file-body.ts) instead of through @hono/node-server's web-stream loop. Only
 * answers with a blob's media type are looked at: reading `body` makes the adapter's Response
 * give up its fast path, which the other answers keep. RESPONSE_ALREADY_SENT was made by
 * Node's own Response when the module loaded, before the adapter replaced the global one, and
 * tells the adapter to leave the response alone.
 */
export function sendingFiles(fetch: Fetch): Fetch {
  return async (req, env) => {
    const res = await fetch(req, env);
    if (res.headers.get('content-type') !== 'application/octet-stream') return res;
    const out = env.outgoing;
    if (!(out instanceof ServerResponse) || out.headersSent) return res;
    const send = takeFileSend(res.body);
    if (!send) return res;
    try {
      out.writeHead(res.status, Object.fromEntries(res.headers));
    } catch (err) {
      await res.body?.cancel().catch(() => undefined);
      throw err;
    }
    // The socket too: a response queued behind another on a pipelined connection has none of
    // its own yet, and never closes if the connection dies before its turn.
    void send(out, env.incoming.socket);
    return RESPONSE_ALREADY_SENT;
  };
}

export interface Drain {
  /** Responses in flight: started and not yet finished. */
  inFlight(): number;
  /**
   * Stops accepting connections and lets the requests in flight finish: each response from now
   * on says `Connection: close`, and every connection is closed as soon as it is idle. At the
   * deadline the connections still open are destroyed. Resolves once none is left, with the
   * number of responses that were cut.
   */
  drain(deadlineMs: number): Promise<{ cut: number }>;
}

/**
 * A socket of node:http with the response it is serving: `_httpMessage` is private, but it is
 * what Node's own closeIdleConnections reads, and what http-terminator relies on; reading it
 * keeps the drain off the request path (no listener per request until the drain begins).
 */
type HttpSocket = Socket & { _httpMessage?: ServerResponse | null };

/** Call before the server takes its first connection. */
export function drainable(server: Server): Drain {
  const sockets = new Set<HttpSocket>();
  server.on('connection', (socket: HttpSocket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  const inFlight = () => {
    let n = 0;
    for (const socket of sockets) if (socket._httpMessage && !socket._httpMessage.writableFinished) n++;
    return n;
  };
  return {
    inFlight,
    drain(deadlineMs) {
      // Node's own close() leaves a keep-alive connection open after its response (Node 20): it
      // closes only the connections idle at the moment it is called.
      const closeIdle = () => server.closeIdleConnections();
      const closeAfter = (res: ServerResponse) => {
        if (!res.headersSent) res.shouldKeepAlive = false;
        res.once('close', () => setImmediate(closeIdle));
      };
      for (const socket of sockets) if (socket._httpMessage) closeAfter(socket._httpMessage);
      // A request that arrives meanwhile on a kept-alive connection is served, and told so too.
      server.on('request', (_req, res: ServerResponse) => closeAfter(res));
      return new Promise((resolve) => {
        let cut = 0;
        const deadline = setTimeout(() => {
          cut = inFlight();
          server.closeAllConnections();
        }, deadlineMs);
        // A connection can turn idle without a response closing (one that never sent a request),
        // and one still sending its request's headers (a slow or stalled client) is not idle to
        // Node: neither has a request being served, so neither has anything to lose.
        const sweep = setInterval(() => {
          closeIdle();
          for (const socket of sockets) if (!socket._httpMessage) socket.destroy();
        }, 250);
        server.close(() => {
          clearTimeout(deadline);
          clearInterval(sweep);
          resolve({ cut });
        });
      });
    },
  };
}
