import { MAX_LIST_LIMIT } from '../../ports/meta-index.js';
import { parseDigest, type Digest } from '../oci/digest.js';
import { objects } from '../registry/keys.js';
import { backfill, type BackfillReport } from './backfill.js';
import { collect, type CollectOutcome } from './collect.js';
import {
  bucketStart,
  closedBucket,
  firstReference,
  gcKeys,
  listBucket,
  listBuckets,
  readState,
  unreferencedSince,
  type Candidate,
  type GcPorts,
  type ReferenceCheck,
} from './references.js';

/**
 * One garbage-collection run: the candidates (noted whenever a digest's last reference goes or
 * new bytes are stored, in buckets of five minutes: references.ts), oldest bucket first, one page at a
 * time, each through `collect`; the buckets within the grace are not read. A bucket settled whole
 * leaves the directory once no note can land in it. A run reads no repository and lists no store
 * object: its cost grows with the candidates, which is the garbage plus what was stored or
 * unlinked in the buckets it reads. Any number of runs may go at once, on
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
  const now = ports.clock.now();
  /** Whether the candidate stays listed after this run: kept, in a dry run anything not deleted. */
  const stays = (outcome: string) => outcome !== 'deleted' && outcome !== 'referenced' && outcome !== 'not-candidate';
  for (const { bucket, version } of await listBuckets(ports)) {
    // Every note in this bucket and after it is younger than the grace: nothing to do there yet.
    if (now - bucketStart(bucket) < options.graceMs) break;
    let kept = 0;
    let after: string | undefined;
    for (;;) {
      if (report.examined >= max) return report;
      const page = await listBucket(ports, bucket, { after, limit: Math.min(MAX_LIST_LIMIT, max - report.examined) });
      for (const candidate of page) {
        report.examined++;
        const outcome = await visit(ports, candidate, options, report, runId);
        if (report.dryRun ? outcome !== 'deleted' : stays(outcome)) kept++;
      }
      if (page.length < MAX_LIST_LIMIT) break;
      after = page[page.length - 1]!.digest;
    }
    // Settled whole, and no note can land in it any more: out of the directory, at the version
    // read (a note that came since keeps it listed). Its tombstones are never listed again.
    if (!report.dryRun && kept === 0 && closedBucket(bucket, ports.clock.now())) await ports.index.delete(gcKeys.bucket(bucket), version);
  }
  return report;
}

/** One candidate through collect (or, in a dry run, wouldDelete); returns the outcome, 'failed' on a store or index error. */
async function visit(ports: GcPorts, candidate: Candidate, options: GcRunOptions, report: GcReport, runId: string): Promise<string> {
  let digest: Digest;
  try {
    digest = parseDigest(candidate.digest);
  } catch {
    // Not a digest: nothing any writer would note; settle it.
    if (!report.dryRun) await ports.index.delete(candidate.key, candidate.version);
    return 'not-candidate';
  }
  // Young by its note alone: no read needed (collect would answer the same).
  if (ports.clock.now() - candidate.since < options.graceMs) {
    report.outcomes.young = (report.outcomes.young ?? 0) + 1;
    return 'young';
  }
  try {
    let size: number | undefined;
    const outcome = report.dryRun
      ? await wouldDelete(ports, digest, candidate, options.graceMs, (s) => (size = s))
      : await collect(ports, digest, { graceMs: options.graceMs, runId, candidate, check: options.check, deleting: (s) => (size = s) });
    report.outcomes[outcome] = (report.outcomes[outcome] ?? 0) + 1;
    // Counted when there were bytes to delete: a candidate whose bytes never arrived (a refused push) is only settled.
    if (outcome === 'deleted' && size !== undefined) {
      report.deleted++;
      report.deletedBytes += size;
      options.onDelete?.(candidate.digest, size);
    }
    return outcome;
  } catch {
    report.failed++;
    return 'failed';
  }
}

/** What collect would answer now, reading only: 'deleted' if it would delete (with its size told), else 'kept'. */
async function wouldDelete(ports: GcPorts, digest: Digest, candidate: Candidate, graceMs: number, deleting: (size: number | undefined) => void): Promise<'deleted' | 'kept'> {
  const [state, unreferenced] = await Promise.all([readState(ports.index, digest.value), unreferencedSince(ports, digest.value)]);
  const v = state?.value;
  if (v && v.state !== 'live') return 'kept';
  const now = ports.clock.now();
  if (now - Math.max(candidate.since, v?.since ?? -Infinity, unreferenced ?? -Infinity) < graceMs) return 'kept';
  if ((await firstReference(ports, digest.value)) !== undefined) return 'kept';
  deleting((await ports.store.stat(objects.content(digest)))?.size);
  return 'deleted';
}
