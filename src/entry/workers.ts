import type { Hono } from 'hono';
import { OciError } from '../core/errors.js';
import { ociErrorResponse } from '../http/errors.js';
import { systemClock } from '../ports/clock.js';
import { cloudAdapters } from './cloud.js';
import { ConfigError, readConfig } from './config.js';
import { outpostApp } from './outpost.js';

/**
 * Outpost on Cloudflare Workers: S3 (or R2's S3 API) for blobs, DynamoDB for the index. The
 * configuration (vars and secrets, see wrangler.toml and the README) is read and the adapters
 * are built once per isolate, on its first request; every request after that reuses them.
 */
type Env = Record<string, unknown>;

let app: Hono | undefined;

function build(env: Env): Hono {
  const config = readConfig(env, 'workers');
  if (config.store.kind !== 'cloud') throw new ConfigError(['OUTPOST_STORE must be "cloud" on Workers']);
  return outpostApp(config, cloudAdapters(config.store, systemClock));
}

export default {
  async fetch(request: Request, env: Env, ctx: unknown): Promise<Response> {
    try {
      app ??= build(env);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      // The operator's mistake, not the client's: say what is wrong in the log and the response.
      console.error(`outpost: ${err.message}`);
      return ociErrorResponse(new OciError('MISCONFIGURED', undefined, { problems: err.problems }), request.method === 'HEAD');
    }
    return app.fetch(request, env, ctx as never);
  },
};
