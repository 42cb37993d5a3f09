import type { Hono } from 'hono';
import { OciError } from '../core/errors.js';
import { ociErrorResponse } from '../http/errors.js';
import { systemClock } from '../ports/clock.js';
import { cloudAdapters } from './cloud.js';
import { ConfigError, readConfig } from './config.js';
import { outpostApp } from './outpost.js';
import type { Metrics } from '../core/metrics.js';

/**
 * Outpost on Cloudflare Workers: S3 (or R2's S3 API) for blobs, DynamoDB for the index. The
 * configuration (vars and secrets, see wrangler.toml and the README; the configuration document,
 * if any, is the OUTPOST_CONFIG var, and its passwordEnv keys name secrets of the same env) is
 * read and the adapters are built once per isolate, on its first request; every request after
 * that reuses them.
 */
type Env = Record<string, unknown>;

let built: { app: Hono; metrics: Metrics } | undefined;

function build(env: Env) {
  const config = readConfig(env, 'workers');
  if (config.store.kind !== 'cloud') throw new ConfigError(['OUTPOST_STORE must be "cloud" on Workers']);
  return outpostApp(config, cloudAdapters(config.store, systemClock));
}

/**
 * An isolate cannot be scraped, so the mirror's counters leave as one structured log line per
 * request that changed them (what changed since the previous line; bytes a response streams
 * after it returned appear on the next line).
 */
function logMetrics(metrics: Metrics): void {
  const changed = metrics.drain();
  if (changed.length > 0) console.log(JSON.stringify({ msg: 'metrics', metrics: changed }));
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
    logMetrics(built.metrics);
    return response;
  },
};
