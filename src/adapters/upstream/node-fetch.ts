import { Agent as HttpAgent, request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { webStreamOf } from '../node-readable.js';

/**
 * A `fetch` for the upstream client on Node, over node:http and node:https. Node's own fetch
 * (undici) copies every chunk it receives (`new Uint8Array(bytes)`) on top of the socket's
 * buffer, and at fill rates that garbage is the largest removable cost of a cold fill
 * (bench/mirror-fill.ts). This one hands on the Buffers the HTTP parser slices from the
 * socket's reads, as they are (a Buffer is a Uint8Array). Node only: the Workers entry keeps
 * the runtime's fetch, and nothing outside src/entry/node.ts imports this file.
 *
 * It does what transport.ts asks of a fetch, and refuses the rest rather than half-doing it:
 *
 *   input            a URL or its string, http: or https:
 *   method           GET or HEAD; no request body
 *   headers          sent as given (plus `accept: * / *` when absent, as fetch does); no
 *                    Accept-Encoding, so answers come unencoded and Content-Length counts the body
 *   redirect         'manual' only: a 3xx is answered as it is, Location included
 *   signal           aborts the request before its answer (rejects with the signal's reason)
 *                    and the body after it (the stream errors with the reason)
 *   answer           status, statusText, headers (repeated ones joined with ", " by Headers,
 *                    as fetch does), a web ReadableStream body (null for HEAD, 204, 205, 304)
 *   failures         TypeError('fetch failed', { cause }) for a connection refused, reset or a
 *                    TLS failure before the answer; TypeError('terminated', { cause }) errors a
 *                    body cut short, as undici words them
 *
 * TLS verifies certificates the usual way (Node's CA store, the URL's host as SNI and name);
 * a caller may pass agents of its own (a CA for tests). One keep-alive agent per protocol.
 */

/**
 * A free keep-alive socket is closed after this long, as Node's global agent does (a server's
 * `Keep-Alive: timeout` hint, when shorter, wins): a server closing an idle connection just as
 * we reuse it would cost a failed attempt and a retry.
 */
const FREE_SOCKET_TIMEOUT_MS = 5000;

/** Statuses whose answers have no body (Fetch "null body status"). */
const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304]);

export interface NodeFetchOptions {
  /** Agents to use instead of this fetch's own keep-alive ones (e.g. one trusting a test CA). */
  httpAgent?: HttpAgent;
  httpsAgent?: HttpsAgent;
}

export type NodeFetch = typeof fetch & {
  /** Closes the agents' idle connections (and refuses nothing: a later call opens new ones). */
  close(): void;
};

function failed(cause: unknown): TypeError {
  return new TypeError('fetch failed', { cause });
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('This operation was aborted', 'AbortError');
}

/** The request's headers as node:http takes them: lower-case names, Accept defaulted as fetch does. */
function requestHeaders(init: RequestInit | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of new Headers(init?.headers)) out[name] = value;
  out.accept ??= '*/*';
  return out;
}

function responseHeaders(raw: string[]): Headers {
  const headers = new Headers();
  for (let i = 0; i + 1 < raw.length; i += 2) headers.append(raw[i]!, raw[i + 1]!);
  return headers;
}

/** How an abort after the answer reaches the body stream. */
const ABORT = Symbol('abort');

/**
 * The body of `res` as a web stream of the Buffers node:http emits (webStreamOf). A cancelled
 * body already received whole is read off, so its connection goes back to the pool; the rest
 * of a body still arriving is not worth waiting for.
 */
function bodyStream(req: ClientRequest, res: IncomingMessage, settle: () => void): ReadableStream<Uint8Array> {
  const { stream, fail } = webStreamOf(res, {
    settle,
    cancel: () => (res.complete ? res.resume() : req.destroy()),
  });
  return Object.assign(stream, {
    /** Errors the stream from outside (an abort), tearing the connection down. */
    [ABORT]: (reason: unknown) => {
      fail(reason);
      req.destroy();
    },
  });
}

export function nodeFetch(o: NodeFetchOptions = {}): NodeFetch {
  const agentOptions = { keepAlive: true, scheduling: 'lifo' as const, timeout: FREE_SOCKET_TIMEOUT_MS };
  const httpAgent = o.httpAgent ?? new HttpAgent(agentOptions);
  const httpsAgent = o.httpsAgent ?? new HttpsAgent(agentOptions);

  const f = (input: string | URL | Request, init?: RequestInit): Promise<Response> =>
    new Promise<Response>((resolve, reject) => {
      if (typeof input !== 'string' && !(input instanceof URL)) return reject(new TypeError('nodeFetch takes a URL, not a Request'));
      const signal = init?.signal ?? undefined;
      if (signal?.aborted) return reject(abortReason(signal));
      let url: URL;
      let headers: Record<string, string>;
      try {
        url = new URL(input);
        headers = requestHeaders(init);
      } catch (err) {
        return reject(new TypeError(`nodeFetch: ${err instanceof Error ? err.message : String(err)}`, { cause: err }));
      }
      const method = (init?.method ?? 'GET').toUpperCase();
      if (method !== 'GET' && method !== 'HEAD') return reject(new TypeError(`nodeFetch sends GET and HEAD only, not ${method}`));
      if (init?.body != null) return reject(new TypeError('nodeFetch sends no request body'));
      if (init?.redirect !== 'manual') return reject(new TypeError("nodeFetch follows no redirects: pass redirect: 'manual'"));
      if (url.protocol !== 'http:' && url.protocol !== 'https:') return reject(failed(new Error(`unsupported protocol ${url.protocol}`)));

      let answered = false;
      let body: (ReadableStream<Uint8Array> & { [ABORT]: (reason: unknown) => void }) | undefined;
      const onAbort = () => {
        const reason = abortReason(signal!);
        if (body) return body[ABORT](reason);
        if (!answered) {
          answered = true;
          reject(reason);
        }
        req.destroy();
      };
      const settle = () => signal?.removeEventListener('abort', onAbort);

      const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
      let req: ClientRequest;
      try {
        req = send(url, { method, headers, agent: url.protocol === 'https:' ? httpsAgent : httpAgent });
      } catch (err) {
        // node:http refuses a header it cannot send (a newline in a value) when the request is built.
        return reject(failed(err));
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      // Errors after the answer reach the body through the response's own events.
      req.on('error', (err) => {
        if (answered) return;
        answered = true;
        settle();
        reject(failed(err));
      });
      req.on('response', (res) => {
        if (answered) return void res.destroy();
        answered = true;
        const status = res.statusCode ?? 0;
        let response: Response;
        try {
          const init = { status, statusText: res.statusMessage ?? '', headers: responseHeaders(res.rawHeaders) };
          if (method === 'HEAD' || NULL_BODY_STATUSES.has(status)) {
            // Nothing to read; reading it off ends the message and frees the connection.
            res.resume();
            settle();
            response = new Response(null, init);
          } else {
            body = bodyStream(req, res, settle) as typeof body;
            response = new Response(body, init);
          }
        } catch (err) {
          // A status outside 200-599 or a header the Headers class refuses: no answer fetch would give.
          settle();
          req.destroy();
          return reject(failed(err));
        }
        resolve(response);
      });
      req.end();
    });

  return Object.assign(f, {
    close() {
      httpAgent.destroy();
      httpsAgent.destroy();
    },
  }) as NodeFetch;
}
