/**
 * A per-instance byte budget for fill buffers. A Workers isolate has 128 MB, and every fill in
 * flight holds up to two parts in memory (one filling, one being written), so the number of
 * fills one instance leads at once is bounded by this budget; further fills poll for room (or,
 * meanwhile, find another instance leading them and follow it instead: core/mirror/fills.ts).
 * It hands out no promises: on workerd a request must never wait on one that only another
 * request's work can settle.
 */
export class ByteBudget {
  private used = 0;

  constructor(readonly limit: number) {}

  /**
   * Reserves `bytes` (capped at the whole budget, so a request can always be met once the
   * budget is free) and returns its release, or undefined when there is no room now.
   */
  tryReserve(bytes: number): (() => void) | undefined {
    const n = Math.min(bytes, this.limit);
    if (this.used + n > this.limit) return undefined;
    this.used += n;
    return this.releaser(n);
  }

  /** Bytes reserved now (for tests and metrics). */
  get inUse(): number {
    return this.used;
  }

  private releaser(n: number): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.used -= n;
    };
  }
}
