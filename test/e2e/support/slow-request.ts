import { connect, type Socket } from 'node:net';

/**
 * One HTTP/1.1 request over a raw socket whose body goes out slowly, chunk by chunk with a pause
 * between, so that a test can act (kill the server) at a known point of the body: `sent(n)`
 * resolves once n bytes of the body were written to the socket. `fetch` cannot do this (it
 * buffers a Uint8Array body whole and gives no progress).
 */
export interface SlowRequest {
  /** Resolves once at least `bytes` bytes of the body have been written. */
  sent(bytes: number): Promise<void>;
  /** Once the connection has closed: the response's status, or undefined when none came (the server died). */
  response: Promise<number | undefined>;
  socket: Socket;
}

export interface SlowRequestOptions {
  port: number;
  method: string;
  /** Path and query, e.g. /v2/repo/blobs/uploads/?digest=... */
  path: string;
  headers: Record<string, string>;
  body: Uint8Array;
  chunkBytes: number;
  pauseMs: number;
}

export function slowRequest(o: SlowRequestOptions): SlowRequest {
  const socket = connect(o.port, '127.0.0.1');
  let written = 0;
  let stopped = false;
  const waiters: Array<{ bytes: number; resolve: () => void; reject: (err: Error) => void }> = [];
  const wake = () => {
    for (const w of waiters.filter((w) => written >= w.bytes)) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
  };
  let answer = '';
  const response = new Promise<number | undefined>((resolve) => {
    socket.setEncoding('latin1');
    socket.on('data', (s: string) => (answer += s));
    socket.on('close', () => {
      stopped = true;
      for (const w of waiters.splice(0)) w.reject(new Error(`the connection closed after ${written} bytes of the body`));
      const m = /^HTTP\/1\.1 (\d{3})/.exec(answer);
      resolve(m ? Number(m[1]) : undefined);
    });
  });
  // A server killed mid-request resets the connection: that is the point, not a failure.
  socket.on('error', () => undefined);
  socket.once('connect', async () => {
    const head = [`${o.method} ${o.path} HTTP/1.1`, 'Host: 127.0.0.1', ...Object.entries(o.headers).map(([k, v]) => `${k}: ${v}`), '', ''].join('\r\n');
    socket.write(head);
    while (!stopped && written < o.body.byteLength) {
      const chunk = o.body.subarray(written, written + o.chunkBytes);
      await new Promise<void>((resolve) => socket.write(chunk, () => resolve()));
      written += chunk.byteLength;
      wake();
      await new Promise((r) => setTimeout(r, o.pauseMs));
    }
  });
  return {
    socket,
    response,
    sent: (bytes) =>
      new Promise<void>((resolve, reject) => {
        if (written >= bytes) return resolve();
        if (stopped) return reject(new Error(`the connection closed after ${written} bytes of the body`));
        waiters.push({ bytes, resolve, reject });
      }),
  };
}
