import type { Clock } from '../../ports/clock.js';

/**
 * A small in-process cache with expiry, for upstream listings (tags/list pages, referrers)
 * that are cheap to fetch again and not worth an index item each: every instance keeps its
 * own, so a listing is fetched at most once per TTL per instance. Bounded in entries (the
 * oldest go first) and in what one entry may weigh, so no upstream can grow it without bound.
 */
export class TtlCache<V> {
  private readonly entries = new Map<string, { value: V; expiresAt: number; weight: number }>();
  private weight = 0;

  constructor(
    private readonly clock: Clock,
    private readonly maxEntries: number,
    private readonly maxWeight: number,
  ) {}

  get(key: string): V | undefined {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= this.clock.now()) {
      this.remove(key);
      return undefined;
    }
    return entry.value;
  }

  /** Keeps `value` for `ttlMs`; `weight` (e.g. bytes) counts against the cache's bound. */
  set(key: string, value: V, ttlMs: number, weight: number): void {
    if (ttlMs <= 0 || weight > this.maxWeight / 4) return;
    this.remove(key);
    this.entries.set(key, { value, expiresAt: this.clock.now() + ttlMs, weight });
    this.weight += weight;
    while (this.entries.size > this.maxEntries || this.weight > this.maxWeight) {
      const oldest = this.entries.keys().next().value as string;
      this.remove(oldest);
    }
  }

  private remove(key: string): void {
    const entry = this.entries.get(key);
    if (!entry) return;
    this.weight -= entry.weight;
    this.entries.delete(key);
  }
}
