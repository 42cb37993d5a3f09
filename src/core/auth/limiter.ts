/**
 * Fixed-window counters per client address, held in memory by one instance (on Workers, one
 * isolate): failed logins, and cold mirror fills started by anonymous callers. They bound
 * what one address can make one instance do; they are not a global quota (the index is not
 * asked on every login, which would turn each guess into a write).
 *
 * The table holds at most MAX_CLIENTS addresses; when full, the entry whose window ends first
 * goes, so a flood of new addresses cannot grow memory, only forget the oldest windows.
 */

/** Addresses remembered at once by one limiter (about 100 bytes each). */
export const MAX_CLIENTS = 10_000;

interface Window {
  count: number;
  endsAt: number;
}

export class WindowLimiter {
  private readonly windows = new Map<string, Window>();

  constructor(
    private readonly limit: number,
    private readonly windowMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Milliseconds until `client` may act again, or 0 when it is under its limit now. Does not
   * count anything.
   */
  blockedFor(client: string): number {
    const w = this.current(client);
    return w && w.count >= this.limit ? w.endsAt - this.now() : 0;
  }

  /** Counts one act of `client`. */
  record(client: string): void {
    const w = this.current(client);
    if (w) {
      w.count++;
      return;
    }
    if (this.windows.size >= MAX_CLIENTS) this.evict();
    this.windows.set(client, { count: 1, endsAt: this.now() + this.windowMs });
  }

  /** Takes back one act of `client` (a login counted before its check, which then succeeded). */
  forgive(client: string): void {
    const w = this.current(client);
    if (w && w.count > 0) w.count--;
  }

  /** Counts one act when under the limit: 0, or how long until one is allowed (nothing counted). */
  take(client: string): number {
    if (this.limit === 0) return this.windowMs;
    const wait = this.blockedFor(client);
    if (wait === 0) this.record(client);
    return wait;
  }

  private current(client: string): Window | undefined {
    const w = this.windows.get(client);
    if (w && w.endsAt <= this.now()) {
      this.windows.delete(client);
      return undefined;
    }
    return w;
  }

  /** Drops expired windows; if none expired, the one that ends first (Map order is insertion, so the oldest). */
  private evict(): void {
    const now = this.now();
    for (const [client, w] of this.windows) if (w.endsAt <= now) this.windows.delete(client);
    if (this.windows.size >= MAX_CLIENTS) this.windows.delete(this.windows.keys().next().value!);
  }
}
