import type { Clock } from '../../ports/clock.js';
import { discard } from './bodies.js';
import { parseRetryAfter } from './headers.js';
import { MAX_REDIRECTS, type RetryPolicy } from './limits.js';

/**
 * One logical request to the upstream, below authentication:
 *
 *   for attempt in 1..attempts:
 *     for hop in 0..MAX_REDIRECTS:            follow redirects ourselves (redirect: 'manual')
 *       fetch with a headers timeout          (AbortController + a timer, raced so a fetch that ignores its signal still ends)
 *       3xx + Location: drop Authorization if the origin changes, and never add it back
 *     5xx (not 501), connection error, timeout: back off (exponential, jitter) and try again
 *     429 with Retry-After <= maxRetryAfterMs: wait it out and try again
 *   answer the last response (the caller maps its status) or the last error
 *
 * Only whole responses are retried: once a response is returned its body belongs to the
 * caller, and a body that fails later errors its stream instead.
 */

export interface Sendable {
  method: 'GET' | 'HEAD';
  url: URL;
  /** Lower-case names. `authorization` is dropped on the first hop to another origin. */
  headers: Record<string, string>;
  timeoutMs: number;
}

export interface Received {
  kind: 'response';
  res: Response;
  /** Where the response came from, after redirects. */
  url: URL;
  /** Whether a redirect was followed (the answer is then not the upstream's own). */
  redirected: boolean;
  /** Aborts the request, tearing down the body's connection. */
  abort: () => void;
}

/** Why no response could be had: connection errors and timeouts after every attempt, bad redirects. */
export interface NotReceived {
  kind: 'error';
  message: string;
  /** Connection errors and timeouts may pass; a bad redirect answers the same every time. */
  retriable: boolean;
}

export interface TransportOptions {
  fetch: typeof fetch;
  clock: Clock;
  sleep: (ms: number) => Promise<void>;
  random: () => number;
  retries: RetryPolicy;
  log: (event: Record<string, unknown>) => void;
  /** Sees every response, redirects included (rate-limit headers are read here). */
  observe: (res: Response, url: URL) => void;
}

class HeadersTimeout extends Error {
  override readonly name = 'HeadersTimeout';
}

const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

/** 501 Not Implemented answers the same every time. */
function retriableStatus(status: number): boolean {
  return status >= 500 && status !== 501;
}

export class Transport {
  constructor(private readonly o: TransportOptions) {}

  async send(req: Sendable): Promise<Received | NotReceived> {
    const { attempts, maxRetryAfterMs } = this.o.retries;
    let last: Received | NotReceived = { kind: 'error', message: `${req.url.host}: not attempted`, retriable: false };
    for (let attempt = 1; attempt <= Math.max(1, attempts); attempt++) {
      last = await this.follow(req);
      const final = attempt >= attempts;
      let delayMs: number | undefined;
      if (last.kind === 'error') {
        if (!last.retriable) return last;
        delayMs = this.backoff(attempt);
      } else if (retriableStatus(last.res.status)) {
        delayMs = this.backoff(attempt);
      } else if (last.res.status === 429) {
        const seconds = parseRetryAfter(last.res.headers.get('retry-after'), this.o.clock.now());
        // No Retry-After: Docker Hub's pull limit says nothing and lasts hours; do not hammer it.
        if (seconds === undefined || seconds * 1000 > maxRetryAfterMs) return last;
        delayMs = seconds * 1000;
      }
      if (delayMs === undefined || final) return last;
      const reason = last.kind === 'error' ? last.message : `status ${last.res.status}`;
      if (last.kind === 'response') await discard(last.res);
      this.o.log({ event: 'upstream.retry', host: req.url.host, attempt, delayMs, reason });
      await this.o.sleep(delayMs);
    }
    return last;
  }

  /** Exponential backoff with jitter: base * 2^(attempt-1), capped, less a random 0-50 %. */
  private backoff(attempt: number): number {
    const { baseDelayMs, maxDelayMs } = this.o.retries;
    const full = Math.min(maxDelayMs, baseDelayMs * 2 ** (attempt - 1));
    return Math.round(full * (1 - this.o.random() / 2));
  }

  private async follow(req: Sendable): Promise<Received | NotReceived> {
    const headers = { ...req.headers };
    let url = req.url;
    for (let hop = 0; ; hop++) {
      let got: { res: Response; abort: () => void };
      try {
        got = await this.fetchOnce(req.method, url, headers, req.timeoutMs);
      } catch (err) {
        const message = err instanceof HeadersTimeout ? `${url.host}: no response within ${req.timeoutMs} ms` : `${url.host}: connection failed`;
        return { kind: 'error', message, retriable: true };
      }
      const { res } = got;
      this.o.observe(res, url);
      const location = res.headers.get('location');
      if (!REDIRECT_STATUSES.has(res.status) || location === null) return { kind: 'response', res, url, redirected: hop > 0, abort: got.abort };
      await discard(res);
      if (hop >= MAX_REDIRECTS) return this.badRedirect(`${req.url.host}: more than ${MAX_REDIRECTS} redirects`);
      let next: URL;
      try {
        next = new URL(location, url);
      } catch {
        return this.badRedirect(`${url.host}: unreadable redirect Location`);
      }
      if (next.protocol !== 'https:' && next.protocol !== 'http:') return this.badRedirect(`${url.host}: redirect to a non-http(s) URL`);
      // Credentials are for the upstream only: a CDN or object store we are sent to gets none,
      // and neither does anything after it (go-containerregistry transport rule).
      const dropped = next.origin !== url.origin && 'authorization' in headers;
      if (next.origin !== url.origin) delete headers.authorization;
      // Log hosts only: a signed URL's query is a credential of its own.
      this.o.log({ event: 'upstream.redirect', from: url.host, to: next.host, status: res.status, credentialsDropped: dropped });
      url = next;
    }
  }

  private badRedirect(message: string): NotReceived {
    return { kind: 'error', message, retriable: false };
  }

  private async fetchOnce(method: string, url: URL, headers: Record<string, string>, timeoutMs: number): Promise<{ res: Response; abort: () => void }> {
    const controller = new AbortController();
    const abort = () => controller.abort();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(new HeadersTimeout());
        controller.abort();
      }, timeoutMs);
    });
    const pending = this.o.fetch(url.href, { method, headers, redirect: 'manual', signal: controller.signal });
    try {
      const res = await Promise.race([pending, timeout]);
      return { res, abort };
    } catch (err) {
      // A fetch that answers after its timeout has its body let go.
      pending.then(discard, () => undefined);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }
}
