import type { Hono } from 'hono';
import { OciError } from '../core/errors.js';
import { inLargerChunks } from '../core/streams.js';
import { ociErrorResponse } from '../http/errors.js';
import { systemClock } from '../ports/clock.js';
import { cloudAdapters } from './cloud.js';
import { ConfigError, readConfig } from './config.js';
import { createLog, type Log } from './log.js';
import { outpostApp } from './outpost.js';
import { publicGoodTrustedRoot } from './public-good.js';
import type { Metrics } from '../core/metrics.js';
import type { GcConfig } from '../core/gc/config.js';
import type { Registry } from '../core/registry/registry.js';
import type { ConnectionInfo } from '../http/access-log.js';
import { upkeep, type UpkeepReport } from './upkeep.js';

/**
 * Outpost on Cloudflare Workers: S3 (or R2's S3 API) for blobs, DynamoDB for the index. The
 * configuration (vars and secrets, see wrangler.toml and the README; the configuration document,
 * if any, is the OUTPOST_CONFIG var, and its passwordEnv keys name secrets of the same env) is
 * read and the adapters are built once per isolate, on its first request or scheduled event;
 * every one after that reuses them. A Cron Trigger (wrangler.toml [triggers]) runs the upkeep
 * that a Node server runs on timers: garbage collection and the leftovers of crashes.
 */
type Env = Record<string, unknown>;

/** The little of workerd's ScheduledController and ExecutionContext that `scheduled` uses. */
interface ScheduledController {
  readonly cron: string;
  readonly scheduledTime: number;
}
interface ExecutionContext {
  waitUntil(promise: Promise<unknown>): void;
}

let built: { app: Hono; metrics: Metrics; log: Log; registry: Registry; gc: GcConfig } | undefined;

/**
 * The most GC candidates one scheduled invocation looks at; the rest stay listed for the next
 * (core/gc/run.ts), so a backlog takes several invocations and loses nothing. A deleted
 * candidate costs ten subrequests (eight index requests: reads, conditional writes, a list of its
 * references, the deletes of its notes; a stat and a delete of its bytes), a referenced one fewer,
 * a few more where a dangling reference is checked or repaired; each is one S3 or DynamoDB round
 * trip and one request signature: 500 candidates stay near half of the 10,000 subrequests a
 * Workers Paid invocation may make (the reclaim that
 * follows makes a few per page of leftovers), take minutes at most of the 15 a Cron Trigger may
 * run, and seconds of CPU time of the default 30. Not a time budget: GcRunOptions has no deadline.
 */
const SCHEDULED_GC_MAX_CANDIDATES = 500;

/**
 * The access log on Workers. The client's address is the one Cloudflare's edge puts in
 * CF-Connecting-IP. The end of a response cannot be observed without routing every body chunk
 * through a JavaScript TransformStream, which costs CPU time on every blob byte and keeps
 * workerd from streaming a fetched body natively; so each record is written when the handler
 * returns (outcome "returned"), with the declared Content-Length as its bytes.
 */
const workersConnection: ConnectionInfo = {
  remoteAddress: (c) => c.req.header('cf-connecting-ip'),
  requestBody(c) {
    const raw = c.req.raw;
    if (!raw.body) return undefined;
    let body = bodies.get(raw);
    if (!body) bodies.set(raw, (body = inLargerChunks(raw.body, BODY_CHUNK_BYTES)));
    return body;
  },
};

/**
 * Request and upstream bodies are read into buffers of this size, not in workerd's 4 KiB chunks
 * (core/streams.ts inLargerChunks). bench:cloud, a 1 GiB push through the Worker: 4 KiB chunks
 * 107 MiB/s with the isolate's peak at 61 MiB; 64 KiB buffers 188 to 221 MiB/s, but 99 MiB, the
 * buffers already read waiting for V8's next collection; 32 KiB 179 MiB/s at 54 MiB.
 */
const BODY_CHUNK_BYTES = 32 * 1024;
const bodies = new WeakMap<Request, ReadableStream<Uint8Array>>();

/** The runtime's fetch for upstreams, their response bodies read into larger buffers too. */
const upstreamFetch: typeof fetch = async (input, init) => {
  const res = await fetch(input, init);
  return res.body ? new Response(inLargerChunks(res.body, BODY_CHUNK_BYTES), res) : res;
};

function build(env: Env) {
  const config = readConfig(env, 'workers', { publicGoodRoot: publicGoodTrustedRoot });
  if (config.store.kind !== 'cloud') throw new ConfigError(['OUTPOST_STORE must be "cloud" on Workers']);
  const log = createLog(config.logLevel, (line) => console.log(line));
  // A Worker faces the internet: without auth anyone who finds its URL can push and delete.
  if (config.auth?.rules.length === 0) console.warn('outpost: WARNING: auth has no rules: every request is refused');
  if (!config.auth) console.warn('outpost: WARNING: no auth section in OUTPOST_CONFIG: anyone who reaches this Worker can pull, push, overwrite and delete (README "Authentication")');
  return { ...outpostApp(config, cloudAdapters(config.store, systemClock), { metricsRoute: false, log, connection: workersConnection, fetch: upstreamFetch }), log, gc: config.gc };
}

/** The Outpost of this isolate, built on first use; a configuration mistake is logged and thrown (a ConfigError). */
function ready(env: Env): NonNullable<typeof built> {
  try {
    return (built ??= build(env));
  } catch (err) {
    // The operator's mistake: say what is wrong in the log (and, for a request, in the response).
    if (err instanceof ConfigError) console.error(`outpost: ${err.message}`);
    throw err;
  }
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
    let outpost: NonNullable<typeof built>;
    try {
      outpost = ready(env);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      return ociErrorResponse(new OciError('MISCONFIGURED', undefined, { problems: err.problems }), request.method === 'HEAD');
    }
    const response = await outpost.app.fetch(request, env, ctx as never);
    logMetrics(outpost.metrics, outpost.log);
    return response;
  },

  /**
   * A Cron Trigger: one upkeep pass (a GC run over at most SCHEDULED_GC_MAX_CANDIDATES
   * candidates with the configured grace, then the leftovers), its lines carrying the trigger's
   * cron. The pass is handed to waitUntil, so that nothing cuts it short, and returned, so that
   * the invocation ends with it: a failed step fails the invocation, which the dashboard's Cron
   * Events then show. The next invocation takes up whatever this one left listed.
   */
  scheduled(controller: ScheduledController, env: Env, ctx: ExecutionContext): Promise<UpkeepReport> {
    const outpost = ready(env);
    const pass = upkeep(outpost.registry, outpost.log, {
      gc: outpost.gc,
      maxCandidates: SCHEDULED_GC_MAX_CANDIDATES,
      fields: { cron: controller.cron },
    });
    ctx.waitUntil(pass);
    return pass;
  },
};
