import type { Hono } from 'hono';
import { OciError } from '../core/errors.js';
import { ociErrorResponse } from '../http/errors.js';
import { systemClock } from '../ports/clock.js';
import { cloudAdapters } from './cloud.js';
import { ConfigError, readConfig } from './config.js';
import { createLog, type Log } from './log.js';
import { outpostApp } from './outpost.js';
import type { Metrics } from '../core/metrics.js';
import type { ConnectionInfo } from '../http/access-log.js';

/**
 * Outpost on Cloudflare Workers: S3 (or R2's S3 API) for blobs, DynamoDB for the index. The
 * configuration (vars and secrets, see wrangler.toml and the README; the configuration document,
 * if any, is the OUTPOST_CONFIG var, and its passwordEnv keys name secrets of the same env) is
 * read and the adapters are built once per isolate, on its first request; every request after
 * that reuses them.
 */
type Env = Record<string, unknown>;

let built: { app: Hono; metrics: Metrics; log: Log } | undefined;

/**
 * The access log on Workers. The client's address is the one Cloudflare's edge puts in
 * CF-Connecting-IP. The end of a response cannot be observed without routing every body chunk
 * through a JavaScript TransformStream, which costs CPU time on every blob byte and keeps
 * workerd from streaming a fetched body natively; so each record is written when the handler
 * returns (outcome "returned"), with the declared Content-Length as its bytes.
 */
const workersConnection: ConnectionInfo = {
  remoteAddress: (c) => c.req.header('cf-connecting-ip'),
};

function build(env: Env) {
  const config = readConfig(env, 'workers');
  if (config.store.kind !== 'cloud') throw new ConfigError(['OUTPOST_STORE must be "cloud" on Workers']);
  const log = createLog(config.logLevel, (line) => console.log(line));
  return { ...outpostApp(config, cloudAdapters(config.store, systemClock), { metricsRoute: false, log, connection: workersConnection }), log };
}

/**
 * An isolate cannot be scraped, so the mirror's counters leave as one structured log line per
 * request that changed them (what changed since the previous line; bytes a response streams
 * after it returned appear on the next line).
 */
function logMetrics(metrics: Metrics, log: Log): void {
  const changed = metrics.drain();
  if (changed.length > 0) log.write('info', { msg: 'metrics', metrics: changed });
}

export default {
  async fetch(request: Request, env: Env, ctx: unknown): Promise<Response> {
    try {
      built ??= build(env);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      // The operator's mistake, not the client's: say what is wrong in the log and the response.
      console.error(`outpost: ${err.message}`);
      return ociErrorResponse(new OciError('MISCONFIGURED', undefined, { problems: err.problems }), request.method === 'HEAD');
    }
    const response = await built.app.fetch(request, env, ctx as never);
    logMetrics(built.metrics, built.log);
    return response;
  },
};
