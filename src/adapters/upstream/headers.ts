/**
 * Parsers for the response headers the upstream client reads. Each takes the raw header
 * value (or null) and answers undefined for anything it cannot read: a malformed header is
 * treated as an absent one, never trusted in part.
 */

export interface Challenge {
  /** Lower-case auth scheme: `bearer`, `basic`, or whatever else the upstream named. */
  scheme: string;
  /** Auth params with lower-case names (realm, service, scope, error). */
  params: Record<string, string>;
}

/**
 * WWW-Authenticate (RFC 7235 section 4.1): `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"`.
 * Only the first challenge is read; registries send one.
 */
export function parseChallenge(header: string | null): Challenge | undefined {
  if (!header) return undefined;
  const m = /^\s*([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)(?:\s+(.*))?$/s.exec(header);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  const rest = m[2] ?? '';
  // name=token or name="quoted \" string", separated by commas.
  const param = /\s*([A-Za-z0-9!#$%&'*+.^_`|~-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*(?:,|$)/gy;
  let p: RegExpExecArray | null;
  while (param.lastIndex < rest.length && (p = param.exec(rest)) !== null) {
    params[p[1]!.toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : p[3]!;
  }
  return { scheme: m[1]!.toLowerCase(), params };
}

/** A Content-Length: a non-negative safe integer, or undefined. */
export function parseLength(header: string | null): number | undefined {
  if (header === null || !/^\s*\d{1,16}\s*$/.test(header)) return undefined;
  const n = Number(header);
  return Number.isSafeInteger(n) ? n : undefined;
}

export interface ContentRange {
  start: number;
  end: number;
  /** The whole resource's size; undefined for `*`. */
  total?: number;
}

/** `Content-Range: bytes 100-199/1000` (RFC 9110 section 14.4) of a 206. */
export function parseContentRange(header: string | null): ContentRange | undefined {
  const m = header && /^\s*bytes\s+(\d{1,16})-(\d{1,16})\/(\d{1,16}|\*)\s*$/i.exec(header);
  if (!m) return undefined;
  const start = Number(m[1]);
  const end = Number(m[2]);
  const total = m[3] === '*' ? undefined : Number(m[3]);
  if (end < start || (total !== undefined && end >= total)) return undefined;
  return { start, end, total };
}

/** Retry-After (RFC 9110 section 10.2.3): delay-seconds or an HTTP-date, as whole seconds from `now` (never negative). */
export function parseRetryAfter(header: string | null, now: number): number | undefined {
  if (header === null) return undefined;
  const v = header.trim();
  if (/^\d{1,10}$/.test(v)) return Number(v);
  // An IMF-fixdate such as `Wed, 21 Oct 2015 07:28:00 GMT`; Date.parse takes it as UTC.
  if (!/^[A-Za-z]{3}, \d{2} [A-Za-z]{3} \d{4} \d{2}:\d{2}:\d{2} GMT$/.test(v)) return undefined;
  const at = Date.parse(v);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, Math.ceil((at - now) / 1000));
}

/** Docker Hub's `ratelimit-remaining: 76;w=21600`: the number before the first `;`. */
export function parseRateLimitValue(header: string | null): number | undefined {
  const m = header && /^\s*(\d{1,12})\s*(?:;|$)/.exec(header);
  return m ? Number(m[1]) : undefined;
}

/**
 * The target of a `Link: <...>; rel="next"` header (RFC 8288), resolved against the request
 * URL; the distribution spec pages tag lists with it (spec.md#listing-tags).
 */
export function parseNextLink(header: string | null, base: URL): URL | undefined {
  if (!header) return undefined;
  for (const link of header.matchAll(/<([^>]*)>((?:\s*;\s*[^;,]*)*)/g)) {
    const rel = /;\s*rel\s*=\s*(?:"([^"]*)"|([^;,\s]+))/i.exec(link[2] ?? '');
    const rels = (rel?.[1] ?? rel?.[2] ?? '').toLowerCase().split(/\s+/);
    if (!rels.includes('next')) continue;
    try {
      return new URL(link[1]!, base);
    } catch {
      return undefined;
    }
  }
  return undefined;
}
