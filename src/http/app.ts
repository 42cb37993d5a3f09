import { Hono, type Context } from 'hono';
import type { Auth, Identity } from '../core/auth/auth.js';
import { ANONYMOUS } from '../core/auth/access.js';
import { TOKEN_PATH } from '../core/auth/config.js';
import { OciError, type ErrorKind } from '../core/errors.js';
import type { Target } from '../core/mirror/routing.js';
import { parseName } from '../core/oci/reference.js';
import type { Registry } from '../core/registry/registry.js';
import { requestLog, type AccessLogSink, type ConnectionInfo } from './access-log.js';
import { audit, type AuditSink } from './audit.js';
import { actionOf, challenge, enforce, identify, retryAfterSeconds, scopeFor } from './auth.js';
import { errorResponse, methodNotAllowed } from './errors.js';
import { hasDotSegment } from './request.js';
import { blobRoute } from './routes/blobs.js';
import { catalogRoute, referrersRoute, tagsRoute } from './routes/listings.js';
import { manifestRoute } from './routes/manifests.js';
import { startUploadRoute, uploadRoute } from './routes/uploads.js';
import { mirrorRoute, type MirrorRoute } from './routes/mirror.js';
import { tokenRoute } from './routes/token.js';

export interface AppDeps {
  registry: Registry;
  /** Serve the mirror's counters as Prometheus text at GET /metrics (Node; Workers logs them). */
  metrics?: boolean;
  /** Receives one access record per request (src/http/access-log.ts); none is built without it. */
  accessLog?: AccessLogSink;
  /** The runtime's view of the connection: the client's address, the end of each response. */
  connection?: ConnectionInfo;
  /**
   * Authentication and authorisation (src/core/auth); without it every request is allowed, as
   * a registry without an `auth:` section is. A promise: keys are imported and passwords
   * hashed asynchronously; the entry point awaits it before listening when it can.
   */
  auth?: Promise<Auth>;
  /** Receives one audit record per change and per refused request (src/http/audit.ts). */
  audit?: AuditSink;
}

/**
 * The HTTP face of Outpost: the OCI Distribution API over a Registry. Repository names contain
 * slashes, so /v2/ paths are matched here by their trailing segments rather than by Hono's
 * router (spec.md#endpoints).
 */
export function createApp({ registry, metrics = false, accessLog: sink, connection, auth, audit: auditSink }: AppDeps): Hono {
  const app = new Hono();

  // The one outermost middleware: it sees every answer, error responses included, and times
  // the whole request (src/http/access-log.ts).
  const log = requestLog(sink, connection);
  const requestBody = connection?.requestBody;
  app.use('*', async (c, next) => {
    if (requestBody) c.set('requestBody', () => requestBody(c));
    const begun = log.begin(c);
    await next();
    c.res.headers.set('Docker-Distribution-API-Version', 'registry/2.0');
    log.end(c, begun);
    audit(c, auditSink, connection?.remoteAddress(c));
  });

  app.all('/v2', (c) => c.redirect('/v2/', 301));
  if (metrics) {
    app.get('/metrics', () => new Response(registry.mirror.metrics.render(), { headers: { 'Content-Type': 'text/plain; version=0.0.4' } }));
  }
  if (auth) {
    app.all(TOKEN_PATH, async (c) => {
      c.set('audit', { action: 'login' });
      return tokenRoute(c, await started(auth), clientOf(c, connection), (name) => qualifications(registry, name));
    });
  }
  app.all('/v2/*', async (c) => dispatch(c, registry, connection, auth && (await started(auth))));
  // Answered, not thrown: an error thrown here skips the header middleware above.
  app.notFound((c) => errorResponse(new OciError('ROUTE_UNKNOWN', undefined, { path: c.req.path.slice(0, 300) }), c));
  app.onError(errorResponse);
  return app;
}

type Route = [RegExp, MirrorRoute, (c: Context, registry: Registry, name: string, arg: string) => Promise<Response>, ErrorKind];

/**
 * Matched in order against the path after /v2/; the name is everything before the suffix. The
 * last column is the error for a last segment whose percent-encoding is malformed: what that
 * segment should have been.
 */
const ROUTES: Route[] = [
  [/^(.+)\/manifests\/([^/]+)$/, 'manifest', manifestRoute, 'REFERENCE_INVALID'],
  [/^(.+)\/blobs\/uploads\/?$/, 'upload', (c, r, name) => startUploadRoute(c, r, name), 'BLOB_UPLOAD_UNKNOWN'],
  [/^(.+)\/blobs\/uploads\/([^/]+)$/, 'upload', uploadRoute, 'BLOB_UPLOAD_UNKNOWN'],
  [/^(.+)\/blobs\/([^/]+)$/, 'blob', blobRoute, 'DIGEST_INVALID'],
  [/^(.+)\/tags\/list$/, 'tags', (c, r, name) => tagsRoute(c, r, name), 'NAME_INVALID'],
  [/^(.+)\/referrers\/([^/]+)$/, 'referrers', referrersRoute, 'DIGEST_INVALID'],
];

async function dispatch(c: Context, registry: Registry, connection: ConnectionInfo | undefined, auth: Auth | undefined): Promise<Response> {
  const sent = connection?.sentTarget?.(c);
  if (sent !== undefined && hasDotSegment(sent)) throw new OciError('PATH_DOT_SEGMENTS', undefined, { path: sent.split('?', 1)[0]!.slice(0, 300) });
  const path = c.req.path.slice('/v2/'.length);
  // Until routing names what is asked for, a refusal here is of the credentials themselves.
  if (auth) c.set('audit', { action: 'login' });
  const identity = auth ? await identify(c, auth, clientOf(c, connection)) : undefined;
  if (path === '') {
    if (c.req.method !== 'GET' && c.req.method !== 'HEAD') throw methodNotAllowed(['GET', 'HEAD']);
    // The base route is how Docker finds the token endpoint: it answers 200 only to a caller
    // who signed in (an anonymous token counts: the client has been through the flow).
    if (auth && identity!.caller.kind === 'anonymous' && identity!.token === undefined) {
      throw new OciError('UNAUTHORIZED', undefined, undefined, { 'WWW-Authenticate': challenge(c, auth) });
    }
    return new Response(c.req.method === 'HEAD' ? null : '{}', {
      headers: { 'Content-Type': 'application/json', 'Content-Length': '2' },
    });
  }
  if (path === '_catalog') {
    if (!auth) return catalogRoute(c, registry);
    c.set('audit', { action: 'catalog' });
    enforce(c, auth, auth.authoriseCatalog(identity!), 'registry:catalog:*', 'list the catalog');
    return catalogRoute(c, registry, (name) => auth.rules.may(identity!.caller, name, 'pull'));
  }
  for (const [pattern, kind, handle, malformed] of ROUTES) {
    const m = pattern.exec(path);
    if (!m) continue;
    const name = parseName(m[1]!);
    // A refusal by routing (an unknown ?ns=, the mirror's content rules) is of this repository.
    if (auth) c.set('audit', { action: actionOf(kind, c.req.method), repository: name });
    let target = registry.mirror.route(name, c.req.query('ns'));
    const arg = decodeSegment(m[2] ?? '', malformed);
    if (auth) target = authorise(c, auth, identity!, kind, name, target, arg, clientOf(c, connection));
    const response = target.kind === 'mirror' ? await mirrorRoute(c, registry, target, kind, arg) : await handle(c, registry, target.name, arg);
    // A shared cache may keep content only anonymous callers could fetch anyway.
    if (auth && !auth.rules.may(ANONYMOUS, target.name, 'pull') && response.headers.get('cache-control')?.startsWith('public')) {
      response.headers.set('Cache-Control', response.headers.get('cache-control')!.replace(/^public/, 'private'));
    }
    return response;
  }
  throw new OciError('ROUTE_UNKNOWN', undefined, { path: c.req.path.slice(0, 300) });
}

/**
 * Checks the request against the rules and its token (throws the 401 or 403 that answers
 * otherwise) and notes it for the audit log. A mount also needs pull on its source; without
 * it the POST is an ordinary upload, as for a source that lacks the blob, so it reveals
 * nothing. Anonymous callers of a mirrored repository get their cold fills counted.
 */
function authorise(c: Context, auth: Auth, identity: Identity, kind: MirrorRoute, name: string, target: Target, arg: string, client: string): Target {
  const method = c.req.method;
  const action = actionOf(kind, method);
  const mount = kind === 'upload' && method === 'POST' ? c.req.query('mount') : undefined;
  const from = mount !== undefined ? c.req.query('from') : undefined;
  c.set('audit', {
    action: from !== undefined ? 'mount' : action,
    repository: target.name,
    reference: kind === 'manifest' || (kind === 'blob' && method === 'DELETE') ? arg.slice(0, 200) : undefined,
    from,
  });
  // A mount's challenge asks for both scopes, so that the token the client comes back with
  // holds pull on the source too (as Distribution's does).
  const source = from !== undefined ? parseName(from) : undefined;
  const scope = source !== undefined ? `${scopeFor(name, action)} ${scopeFor(source, 'pull')}` : scopeFor(name, action);
  enforce(c, auth, auth.authorise(identity, name, target.name, action), scope, `${action} ${name}`);
  if (source !== undefined) {
    const mount = auth.authorise(identity, source, source, 'pull');
    if (mount === 'insufficient-scope') enforce(c, auth, mount, scope, `mount from ${source}`);
    else if (mount !== 'allowed') c.set('mountRefused', true);
  }
  if (target.kind !== 'mirror' || identity.caller.kind !== 'anonymous') return target;
  return {
    ...target,
    admit: () => {
      const wait = auth.admitAnonymousFill(client);
      if (wait > 0 && auth.config.anonymousFills.limit === 0) {
        throw new OciError('UNAUTHORIZED', 'anonymous callers get only what this mirror holds; sign in to fetch from the upstream', undefined, {
          'WWW-Authenticate': challenge(c, auth, scopeFor(name, 'pull')),
        });
      }
      if (wait > 0) {
        const seconds = String(retryAfterSeconds(wait));
        throw new OciError('TOO_MANY_REQUESTS', `anonymous callers of this address started too many mirror fills; sign in, or try again in ${seconds} s`, undefined, {
          'Retry-After': seconds,
          'WWW-Authenticate': challenge(c, auth, scopeFor(name, 'pull')),
        });
      }
    },
  };
}

/**
 * Authentication that could not start (a token key that does not import) refuses every
 * request: why goes to the log (the entry point's start-up check says it on Node), not to clients.
 */
async function started(auth: Promise<Auth>): Promise<Auth> {
  try {
    return await auth;
  } catch (err) {
    console.error(`outpost: authentication could not start: ${String((err as Error).message).slice(0, 200)}`);
    throw new OciError('MISCONFIGURED', 'authentication could not start; the operator finds why in the log');
  }
}

/** The client's address as the runtime knows it; failed logins and anonymous fills are counted by it. */
function clientOf(c: Context, connection: ConnectionInfo | undefined): string {
  return connection?.remoteAddress(c) ?? 'unknown';
}

/**
 * Every repository a name in a token request may come to mean: as a request without `?ns=`
 * routes it, and as each upstream's `?ns=` would (containerd puts the host in the query, not
 * in the scope). A name an upstream's content rules refuse means nothing there.
 */
function qualifications(registry: Registry, name: string): string[] {
  const out = new Set<string>();
  for (const ns of [undefined, ...registry.mirror.namespaces()]) {
    try {
      out.add(registry.mirror.route(name, ns).name);
    } catch (err) {
      // Not routable that way (an upstream's content rules refuse the name).
      if (!(err instanceof OciError)) throw err;
    }
  }
  return [...out];
}

function decodeSegment(segment: string, malformed: ErrorKind): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new OciError(malformed, `malformed percent-encoding in the path segment "${segment.slice(0, 80)}"`);
  }
}
