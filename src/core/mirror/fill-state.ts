import type { Digest } from '../oci/digest.js';
import type { Metrics } from '../metrics.js';
import { objects } from '../registry/keys.js';
import type { Ctx } from '../registry/context.js';
import type { Upstream } from '../../ports/upstream.js';
import type { ByteBudget } from './budget.js';
import type { FailureRecord } from './failures.js';

/**
 * What a blob fill keeps in its lease item, and the limits and dependencies its parts share:
 * the protocol and its state machine are written at the top of fills.ts.
 */

export interface FillSource {
  /** The upstream's configured name. */
  upstream: string;
  /** The upstream-relative repository the blob was asked for (it vouched for the blob). */
  repository: string;
  /** The same repository's name here, which the committed blob is linked into. */
  name: string;
}

export interface Segment {
  token: number;
  start: number;
  part: number;
}

export interface FillState {
  phase: 'filling' | 'verified' | 'committed' | 'failed';
  /** The token of the holder that wrote this state: a state from an earlier holder is history, not news. */
  token: number;
  /** The whole blob's size, once the upstream said. */
  size?: number;
  /** Bytes [0, stored) are in the parts that `segments` name. */
  stored: number;
  /** Who wrote which parts: holder `token` wrote parts of `part` bytes from `start` until the next segment's start. */
  segments: Segment[];
  failure?: FailureRecord;
}

export interface PartRef {
  key: string;
  offset: number;
  length: number;
}

/** The parts that hold bytes [0, upTo) of a fill, in order. */
export function partsOf(digest: Digest, state: Pick<FillState, 'segments'>, upTo: number): PartRef[] {
  const parts: PartRef[] = [];
  state.segments.forEach((seg, i) => {
    const end = Math.min(state.segments[i + 1]?.start ?? upTo, upTo);
    for (let offset = seg.start; offset < end; offset += seg.part) {
      parts.push({ key: objects.fillPart(digest, offset, seg.token), offset, length: Math.min(seg.part, end - offset) });
    }
  });
  return parts;
}

/** A blob larger than this is refused from any upstream: a bound on what one fill may write (64 GiB). */
export const MAX_FILL_BYTES = 64 * 1024 ** 3;

/** Bytes one fill may store: the registry's blob size cap, never more than MAX_FILL_BYTES. */
export function fillLimit(options: { maxBlobBytes: number }): number {
  return Math.min(MAX_FILL_BYTES, options.maxBlobBytes);
}
/** Resumes (Range requests) after a stream broke off, before the fill gives up. */
export const MAX_RESUMES = 3;
/** Remote followers poll the fill's state this often at first, backing off to the maximum. */
export const POLL_MIN_MS = 20;
export const POLL_MAX_MS = 250;
/**
 * A request that waits on another request's fill in this process also wakes on a timer this
 * often. workerd cancels a request as hung when all it awaits is a promise that only another
 * request's work can settle (it does not see across requests), so waits always include a
 * timer of the waiting request's own; on Node it merely bounds a missed wake-up.
 */
export const LOCAL_TICK_MS = 25;

export interface FillsOptions {
  partBytes: number;
  leaseMs: number;
  /** Who this instance is, for lease owners and logs. */
  instance: string;
  sleep: (ms: number) => Promise<void>;
  /**
   * Whether what a fill's memory window hands on is a copy: each chunk served to a follower, and
   * the bytes of each part write (gathered into pieces of 1 MiB). It must be where the runtime
   * may take over (detach) the buffers a response sends or a store's write is given (workerd
   * does): the window's buffers are shared by every follower and the part writes. Where the
   * runtime only reads them (Node), both are handed the window's own chunks.
   */
  copyChunks: boolean;
  /**
   * A fill's events for the log, one line each: `fill.lead` (started, and from which byte),
   * `fill.retry` (a part or state write tried again), `fill.resume` (a stream broke off, asked
   * again by Range), then `fill.commit` or `fill.fail`. Default: none.
   */
  log?: FillLog;
}

export type FillLog = (level: 'info' | 'warn', fields: { msg: string; digest: string } & Record<string, unknown>) => void;

export interface FillDeps {
  ctx: Ctx;
  metrics: Metrics;
  budget: ByteBudget;
  upstream: (name: string) => Upstream;
  /** Links stored bytes into a repository (Blobs.link): the commit's reference, made inside its hold. */
  link: (name: string, digest: string, size: number) => Promise<boolean>;
  options: FillsOptions;
}

/** Keeps work alive after the response is sent (ctx.waitUntil on Workers; detached on Node). */
export type Defer = (work: Promise<unknown>) => void;
