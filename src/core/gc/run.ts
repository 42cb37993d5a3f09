import { MAX_LIST_LIMIT } from '../../ports/meta-index.js';
import { parseDigest, type Digest } from '../oci/digest.js';
import { objects } from '../registry/keys.js';
import { backfill, type BackfillReport } from './backfill.js';
import { collect, type CollectOutcome } from './collect.js';
import { firstReference, gcKeys, listCandidates, readState, type GcPorts, type ReferenceCheck } from './references.js';

/**
 * One garbage-collection run: the candidates (gc#candidates, noted whenever a digest's last
 * reference goes or new bytes are stored), one page at a time, each through `collect`. A run
 * reads no repository and lists no store object: its cost grows with the candidates, which is
 * the garbage plus what was touched since the last run. Any number of runs may go at once, on
 * any instance, beside pushes, pulls and fills (collect.ts argues why); one that dies leaves
 * its work listed for the next.
 *
 * Before the first run on a store the references of what was stored before they existed are
 * made (backfill.ts), once; until that is done no run deletes anything.
 *
 * A dry run writes nothing: it reports the candidates that a run now would delete (unreferenced
 * and older than the grace by both their note and their state), with their sizes.
 */

export interface GcRunOptions {
  /** Content unreferenced (or stored) more recently than this is kept. */
  graceMs: number;
  dryRun?: boolean;
  /** Stop after this many candidates (the rest wait for the next run); all by default. */
  maxCandidates?: number;
  /** Called for each digest deleted (or, in a dry run, that would be). */
  onDelete?: (digest: string, size: number | undefined) => void;
  /** Tells dangling references from live ones (collect.ts): with it a run also repairs what crashes left. */
  check?: ReferenceCheck;
}

export interface GcReport {
  dryRun: boolean;
  /** Candidates looked at. */
  examined: number;
  /** Deleted (or that would be), and their bytes as the store reported them. */
  deleted: number;
  deletedBytes: number;
  /** Every outcome of collect, counted (a dry run counts only deleted and kept). */
  outcomes: Partial<Record<CollectOutcome | 'kept', number>>;
  /** Present when this run made the references of content stored before they existed. */
  backfill?: BackfillReport;
  /** Candidates that failed (a store or index error); they stay listed for the next run. */
  failed: number;
}

export async function runGc(ports: GcPorts, options: GcRunOptions): Promise<GcReport> {
  const report: GcReport = { dryRun: options.dryRun ?? false, examined: 0, deleted: 0, deletedBytes: 0, outcomes: {}, failed: 0 };
  if (!report.dryRun) {
    const made = await backfill(ports);
    if (made) report.backfill = made;
  }
  const max = options.maxCandidates ?? Infinity;
  const runId = crypto.randomUUID();
  let after: string | undefined;
  while (report.examined < max) {
    const page = await listCandidates(ports, { after, limit: Math.min(MAX_LIST_LIMIT, max - report.examined) });
    for (const candidate of page) {
      report.examined++;
      let digest: Digest;
      try {
        digest = parseDigest(candidate.digest);
      } catch {
        continue;
      }
      // Young by its note alone: no read needed (collect would answer the same).
      if (ports.clock.now() - candidate.since < options.graceMs) {
        report.outcomes.young = (report.outcomes.young ?? 0) + 1;
        continue;
      }
      try {
        let size: number | undefined;
        const outcome = report.dryRun
          ? await wouldDelete(ports, digest, options.graceMs, (s) => (size = s))
          : await collect(ports, digest, { graceMs: options.graceMs, runId, check: options.check, deleting: (s) => (size = s) });
        report.outcomes[outcome] = (report.outcomes[outcome] ?? 0) + 1;
        // Counted when there were bytes to delete: a candidate whose bytes never arrived (a refused push) is only settled.
        if (outcome === 'deleted' && size !== undefined) {
          report.deleted++;
          report.deletedBytes += size;
          options.onDelete?.(candidate.digest, size);
        }
      } catch {
        report.failed++;
      }
    }
    if (page.length < MAX_LIST_LIMIT) break;
    after = page[page.length - 1]!.digest;
  }
  return report;
}

/** What collect would answer now, reading only: 'deleted' if it would delete (with its size told), else 'kept'. */
async function wouldDelete(ports: GcPorts, digest: Digest, graceMs: number, deleting: (size: number | undefined) => void): Promise<'deleted' | 'kept'> {
  const [noted, state] = await Promise.all([ports.index.get<{ since: number }>(gcKeys.candidate(digest.value)), readState(ports.index, digest.value)]);
  const v = state?.value;
  if (!noted || (v && v.state !== 'live')) return 'kept';
  const now = ports.clock.now();
  if (now - Math.max(noted.value.since, v?.since ?? -Infinity) < graceMs) return 'kept';
  if ((await firstReference(ports, digest.value)) !== undefined) return 'kept';
  deleting((await ports.store.stat(objects.content(digest)))?.size);
  return 'deleted';
}
