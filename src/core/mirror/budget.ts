/**
 * A per-instance byte budget for fill buffers. A Workers isolate has 128 MB, and every fill in
 * flight holds up to two parts in memory (one filling, one being written), so the number of
 * fills one instance leads at once is bounded by this budget; further fills wait for room (or,
 * meanwhile, find another instance leading them and follow it instead).
 */
export class ByteBudget {
  private used = 0;
  private readonly waiting: Array<{ bytes: number; grant: () => void }> = [];

  constructor(readonly limit: number) {}

  /** Reserves `bytes` (capped at the whole budget, so a request can always be met) and returns the release. */
  async reserve(bytes: number): Promise<() => void> {
    const n = Math.min(bytes, this.limit);
    if (this.waiting.length === 0 && this.used + n <= this.limit) {
      this.used += n;
      return this.releaser(n);
    }
    await new Promise<void>((grant) => this.waiting.push({ bytes: n, grant }));
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
      while (this.waiting.length > 0 && this.used + this.waiting[0]!.bytes <= this.limit) {
        const next = this.waiting.shift()!;
        this.used += next.bytes;
        next.grant();
      }
    };
  }
}
