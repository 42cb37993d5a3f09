import { createServer, request as httpRequest, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A plain HTTP forwarder in front of a real upstream that paces response bodies to a byte rate,
 * so a test can act while a blob is in flight (kill the instance that is filling it). It records
 * each request with its Range header and the body bytes it passed on, which is how a test proves
 * that no byte was downloaded twice.
 */
export interface ProxiedRequest {
  method: string;
  path: string;
  range?: string;
  status: number;
  /** Body bytes passed on to the client (so far, for a response still streaming). */
  bytes: number;
}

export interface ThrottleProxy {
  url: string;
  requests: ProxiedRequest[];
  /** Bytes per second for response bodies whose path matches (default: blobs only). */
  setRate(bytesPerSecond: number): void;
  stop(): Promise<void>;
}

export async function startThrottleProxy(target: string, bytesPerSecond: number, matches: (path: string) => boolean = (p) => p.includes('/blobs/sha256:')): Promise<ThrottleProxy> {
  const upstream = new URL(target);
  let rate = bytesPerSecond;
  const requests: ProxiedRequest[] = [];
  const server: Server = createServer((req, res) => {
    const entry: ProxiedRequest = { method: req.method ?? 'GET', path: req.url ?? '/', status: 0, bytes: 0 };
    if (req.headers.range) entry.range = String(req.headers.range);
    requests.push(entry);
    const out = httpRequest(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: { ...req.headers, host: upstream.host } },
      (answer: IncomingMessage) => {
        entry.status = answer.statusCode ?? 0;
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        const paced = matches(entry.path) && entry.method === 'GET';
        const started = Date.now();
        // Paused by the pace, by backpressure, or both: resume only when neither holds.
        let waitingForPace = false;
        let waitingForDrain = false;
        const maybeResume = () => {
          if (!waitingForPace && !waitingForDrain) answer.resume();
        };
        answer.on('data', (chunk: Buffer) => {
          entry.bytes += chunk.byteLength;
          if (!res.write(chunk)) {
            waitingForDrain = true;
            answer.pause();
          }
          if (paced) {
            const due = started + (entry.bytes / rate) * 1000 - Date.now();
            if (due > 0) {
              waitingForPace = true;
              answer.pause();
              setTimeout(() => {
                waitingForPace = false;
                maybeResume();
              }, due);
            }
          }
        });
        res.on('drain', () => {
          waitingForDrain = false;
          maybeResume();
        });
        answer.on('end', () => res.end());
        answer.on('error', () => res.destroy());
      },
    );
    out.on('error', () => res.destroy());
    res.on('close', () => out.destroy());
    req.pipe(out);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    setRate: (r) => (rate = r),
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
