import type { GcConfig } from '../core/gc/config.js';
import type { LeftoversReport } from '../core/registry/leftovers.js';
import type { Registry, RegistryGcReport } from '../core/registry/registry.js';
import { DEFAULT_RECLAIM_AGE_MS } from '../ports/blob-store.js';
import type { Log } from './log.js';

/**
 * One pass of a store's upkeep outside any request: a garbage-collection run (core/gc/run.ts),
 * then the leftovers of crashes and abandoned uploads (core/registry/leftovers.ts), each logged
 * as one structured line, `garbage collection` and `reclaimed leftovers`, with the fields a Node
 * server's timed runs write. A Workers Cron Trigger runs one pass per invocation (workers.ts).
 *
 * A step that throws (a store or index error) is logged at warn and the other step still runs;
 * the pass then throws, so that the invocation is recorded as failed. Nothing is lost by a
 * failure: whatever a run did not finish stays listed for the next run.
 */

/** What the configuration's `gc:` asks of one run: the one place the settings become run options (node.ts, cli.ts, here). */
export function gcOptions(gc: GcConfig) {
  return { graceMs: gc.graceMs, retention: gc.mirror, hosted: gc.hosted };
}

export interface UpkeepOptions {
  /** The configuration's gc section: the grace, and the retention of mirrored and hosted content. */
  gc: GcConfig;
  /** The most candidates the collection looks at; the rest wait for the next pass. */
  maxCandidates?: number;
  /** Fields each line of this pass carries (what started it). */
  fields?: Record<string, unknown>;
}

export interface UpkeepReport {
  gc: RegistryGcReport;
  leftovers: LeftoversReport;
}

export async function upkeep(registry: Registry, log: Log | undefined, options: UpkeepOptions): Promise<UpkeepReport> {
  const fields = options.fields ?? {};
  const failures: string[] = [];
  const step = async <T>(what: string, run: () => Promise<T>, line: (report: T) => object): Promise<T | undefined> => {
    try {
      const report = await run();
      log?.write('info', { ...line(report), ...fields });
      return report;
    } catch (err) {
      failures.push(what);
      log?.write('warn', { msg: `${what} failed`, ...fields, error: String(err).slice(0, 300) });
      return undefined;
    }
  };
  const gc = await step(
    'garbage collection',
    () => registry.gc({ ...gcOptions(options.gc), maxCandidates: options.maxCandidates }),
    (report) => ({ msg: 'garbage collection', ...gcSummary(report) }),
  );
  const leftovers = await step(
    'reclaiming leftovers',
    () => registry.reclaim({ olderThanMs: DEFAULT_RECLAIM_AGE_MS }),
    (report) => ({ msg: 'reclaimed leftovers', ...report }),
  );
  if (failures.length > 0) throw new Error(`upkeep: ${failures.join(' and ')} failed (see the log)`);
  return { gc: gc!, leftovers: leftovers! };
}

/** A GC report as one log line's fields (Node's timed runs, the Workers Cron Trigger). */
export function gcSummary(report: RegistryGcReport): Record<string, unknown> {
  return {
    dryRun: report.dryRun,
    examined: report.examined,
    deleted: report.deleted,
    deletedBytes: report.deletedBytes,
    failed: report.failed,
    ...report.outcomes,
    ...(report.backfill ? { backfill: report.backfill } : {}),
    ...(report.retention ? { evicted: report.retention.evicted, evictedBytes: report.retention.evictedBytes, cachedBytes: report.retention.cachedBytes } : {}),
    ...(report.hosted ? { tagsDeleted: report.hosted.tagsDeleted, manifestsDeleted: report.hosted.manifestsDeleted } : {}),
  };
}
