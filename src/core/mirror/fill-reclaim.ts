import { MAX_LIST_KEYS } from '../../ports/blob-store.js';
import type { Json } from '../../ports/meta-index.js';
import { keys } from '../registry/keys.js';
import type { Ctx } from '../registry/context.js';
import type { FillState } from './fill-state.js';

/**
 * Leftover fill parts (fills/<alg>/<hex>/<offset>-<token>, fills.ts): a committed fill's parts
 * whose leader died before deleting them, and the parts of a fill abandoned long ago (its lease
 * free for longer than `olderThanMs`, nobody resumed it). Run with the other leftovers
 * (Registry.reclaim), on any number of instances at once.
 *
 *   for each digest with parts older than olderThanMs (by the store's lastModified):
 *     v = readLease(fill/<digest>)
 *     held (a live holder)                          -> keep everything
 *     committed                                     -> delete the old parts: no reader needs them
 *     free since less than olderThanMs              -> keep (the next request resumes from them)
 *     free longer (abandoned)                       -> r = acquireLease(fill/<digest>)
 *         refused (someone resumed it just now)     -> keep
 *         acquired with token t                     -> releaseLease(r, nothing stored), then
 *                                                      delete the old parts whose token < t
 * The reset comes before any delete: a leader that takes the fill over afterwards starts from
 * nothing stored and writes parts with a token above t, which are never deleted here. Parts of
 * tokens below t are recorded in no state any longer, so no reader is sent to them.
 */

export interface FillReclaimReport {
  /** Part objects deleted. */
  deleted: number;
  /** Part objects left: of live or recent fills, too young, of unknown age, or not a part key. */
  kept: number;
}

/** fills/<alg>/<hex>/<16-digit offset>-<16-digit token> */
const PART_KEY = /^fills\/([a-z0-9]+)\/([0-9a-f]+)\/\d{16}-(\d{16})$/;

const DELETE_CONCURRENCY = 16;

export async function reclaimFills(ctx: Pick<Ctx, 'store' | 'index' | 'clock'>, options: { olderThanMs: number; owner: string }): Promise<FillReclaimReport> {
  const cutoff = ctx.clock.now() - options.olderThanMs;
  const report: FillReclaimReport = { deleted: 0, kept: 0 };
  // Keys sort by digest, so one fill's parts are listed together: one decision each.
  let fill: { digest: string; below: number } | undefined;
  let after: string | undefined;
  for (;;) {
    const page = await ctx.store.list('fills/', { after, limit: MAX_LIST_KEYS });
    const doomed: string[] = [];
    for (const object of page.keys) {
      const m = PART_KEY.exec(object.key);
      if (!m || object.lastModified === undefined || object.lastModified > cutoff) {
        report.kept++;
        continue;
      }
      const digest = `${m[1]}:${m[2]}`;
      if (fill?.digest !== digest) fill = { digest, below: await reclaimable(ctx, digest, cutoff, options) };
      if (Number(m[3]) < fill.below) doomed.push(object.key);
      else report.kept++;
    }
    for (let i = 0; i < doomed.length; i += DELETE_CONCURRENCY) {
      await Promise.all(doomed.slice(i, i + DELETE_CONCURRENCY).map((key) => ctx.store.delete(key)));
    }
    report.deleted += doomed.length;
    if (page.next === undefined) return report;
    after = page.next;
  }
}

/** The token below which the digest's old parts may go: 0 keeps them all. */
async function reclaimable(ctx: Pick<Ctx, 'index' | 'clock'>, digest: string, cutoff: number, options: { owner: string }): Promise<number> {
  const key = keys.fill(digest);
  const view = await ctx.index.readLease<FillState & Json>(key);
  if (!view) return Number.MAX_SAFE_INTEGER; // no fill item at all: the parts belong to no fill
  if (view.holder !== undefined) return 0;
  if (view.state?.phase === 'committed') return view.token + 1;
  if (view.expiresAt > cutoff) return 0;
  const r = await ctx.index.acquireLease(key, options.owner, RESET_LEASE_MS);
  if (!r.acquired) return 0;
  const reset: FillState = { phase: 'filling', token: r.lease.token, stored: 0, segments: [] };
  if (!(await ctx.index.releaseLease(r.lease, reset as unknown as Json))) return 0;
  return r.lease.token;
}

/** Long enough for the one release that follows the acquire. */
const RESET_LEASE_MS = 30_000;
