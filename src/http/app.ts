import { Hono, type Context } from 'hono';
import { OciError, type ErrorKind } from '../core/errors.js';
import { parseName } from '../core/oci/reference.js';
import type { Registry } from '../core/registry/registry.js';
import { requestLog, type AccessLogSink, type ConnectionInfo } from './access-log.js';
import { errorResponse, methodNotAllowed } from './errors.js';
import { hasDotSegment } from './request.js';
import { blobRoute } from './routes/blobs.js';
import { catalogRoute, referrersRoute, tagsRoute } from './routes/listings.js';
import { manifestRoute } from './routes/manifests.js';
import { startUploadRoute, uploadRoute } from './routes/uploads.js';
import { mirrorRoute, type MirrorRoute } from './routes/mirror.js';

export interface AppDeps {
  registry: Registry;
  /** Serve the mirror's counters as Prometheus text at GET /metrics (Node; Workers logs them). */
  metrics?: boolean;
  /** Receives one access record per request (src/http/access-log.ts); none is built without it. */
  accessLog?: AccessLogSink;
  /** The runtime's view of the connection: the client's address, the end of each response. */
  connection?: ConnectionInfo;
}

/**
 * The HTTP face of Outpost: the OCI Distribution API over a Registry. Repository names contain
 * slashes, so /v2/ paths are matched here by their trailing segments rather than by Hono's
 * router (spec.md#endpoints).
 */
export function createApp({ registry, metrics = false, accessLog: sink, connection }: AppDeps): Hono {
  const app = new Hono();

  // The one outermost middleware: it sees every answer, error responses included, and times
  // the whole request (src/http/access-log.ts).
  const log = requestLog(sink, connection);
  app.use('*', async (c, next) => {
    const begun = log.begin(c);
    await next();
    c.res.headers.set('Docker-Distribution-API-Version', 'registry/2.0');
    log.end(c, begun);
  });

  app.all('/v2', (c) => c.redirect('/v2/', 301));
  if (metrics) {
    app.get('/metrics', () => new Response(registry.mirror.metrics.render(), { headers: { 'Content-Type': 'text/plain; version=0.0.4' } }));
  }
  app.all('/v2/*', (c) => dispatch(c, registry, connection));
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

async function dispatch(c: Context, registry: Registry, connection: ConnectionInfo | undefined): Promise<Response> {
  const sent = connection?.sentTarget?.(c);
  if (sent !== undefined && hasDotSegment(sent)) throw new OciError('PATH_DOT_SEGMENTS', undefined, { path: sent.split('?', 1)[0]!.slice(0, 300) });
  const path = c.req.path.slice('/v2/'.length);
  if (path === '') {
    if (c.req.method !== 'GET' && c.req.method !== 'HEAD') throw methodNotAllowed(['GET', 'HEAD']);
    return new Response(c.req.method === 'HEAD' ? null : '{}', {
      headers: { 'Content-Type': 'application/json', 'Content-Length': '2' },
    });
  }
  if (path === '_catalog') return catalogRoute(c, registry);
  for (const [pattern, kind, handle, malformed] of ROUTES) {
    const m = pattern.exec(path);
    if (!m) continue;
    const target = registry.mirror.route(parseName(m[1]!), c.req.query('ns'));
    const arg = decodeSegment(m[2] ?? '', malformed);
    if (target.kind === 'mirror') return mirrorRoute(c, registry, target, kind, arg);
    return handle(c, registry, target.name, arg);
  }
  throw new OciError('ROUTE_UNKNOWN', undefined, { path: c.req.path.slice(0, 300) });
}

function decodeSegment(segment: string, malformed: ErrorKind): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new OciError(malformed, `malformed percent-encoding in the path segment "${segment.slice(0, 80)}"`);
  }
}
