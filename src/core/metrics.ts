/**
 * Counters and gauges of what the mirror does, kept in process memory and rendered as
 * Prometheus text (GET /metrics on Node) or flushed as structured log lines (Workers, whose
 * isolates cannot be scraped). Runtime-agnostic; labels are a closed set chosen by core, so
 * no client input ever becomes a label value (that would be unbounded cardinality).
 */
export const METRICS = {
  outpost_cache_hits_total: { type: 'counter', help: 'requests answered from the cache, by kind (manifest, blob)' },
  outpost_cache_misses_total: { type: 'counter', help: 'requests that needed the upstream, by kind (manifest, blob)' },
  outpost_upstream_requests_total: { type: 'counter', help: 'requests made to upstreams, by upstream, kind and result' },
  outpost_upstream_bytes_total: { type: 'counter', help: 'blob bytes received from upstreams, by upstream' },
  outpost_served_bytes_total: { type: 'counter', help: 'blob bytes sent to clients by the mirror, by source (cache, fill)' },
  outpost_fills_led_total: { type: 'counter', help: 'blob fills this instance led (downloaded from the upstream)' },
  outpost_fills_followed_total: { type: 'counter', help: 'blob reads that followed a fill in flight, by where (local, remote)' },
  outpost_fills_failed_total: { type: 'counter', help: 'blob fills that failed, by reason' },
  outpost_fill_takeovers_total: { type: 'counter', help: 'fills resumed after their leader stopped' },
  outpost_fill_retries_total: { type: 'counter', help: 'part and state writes of fills tried again after the store or the index failed, by what (part, state)' },
  outpost_lease_waits_total: { type: 'counter', help: 'times a request waited for another instance to finish a fetch' },
  outpost_stale_serves_total: { type: 'counter', help: 'tags served past their TTL because the upstream failed' },
  outpost_gate_decisions_total: { type: 'counter', help: 'manifest reads the signature gate decided, by policy and result (allowed, denied, warned, artifact)' },
  outpost_upstream_ratelimit_remaining: { type: 'gauge', help: 'the upstream rate-limit remaining as last reported, by upstream' },
} as const;

export type MetricName = keyof typeof METRICS;
export type Labels = Record<string, string>;

export class Metrics {
  private readonly values = new Map<string, { name: MetricName; labels: Labels; value: number }>();
  private readonly flushed = new Map<string, number>();

  count(name: MetricName, labels: Labels = {}, by = 1): void {
    const entry = this.entry(name, labels);
    entry.value += by;
  }

  /**
   * count() bound to one series, for hot paths that count every chunk of a body: the series
   * key is built once, not per call.
   */
  counter(name: MetricName, labels: Labels = {}): (by?: number) => void {
    const entry = this.entry(name, labels);
    return (by = 1) => {
      entry.value += by;
    };
  }

  set(name: MetricName, labels: Labels, value: number): void {
    this.entry(name, labels).value = value;
  }

  /** The current value, for tests and log lines. */
  get(name: MetricName, labels: Labels = {}): number {
    return this.values.get(seriesKey(name, labels))?.value ?? 0;
  }

  /** Prometheus text exposition format 0.0.4. */
  render(): string {
    const lines: string[] = [];
    for (const [name, meta] of Object.entries(METRICS) as Array<[MetricName, (typeof METRICS)[MetricName]]>) {
      lines.push(`# HELP ${name} ${meta.help}`, `# TYPE ${name} ${meta.type}`);
      for (const entry of this.values.values()) {
        if (entry.name === name) lines.push(`${name}${renderLabels(entry.labels)} ${entry.value}`);
      }
    }
    return `${lines.join('\n')}\n`;
  }

  /** What changed since the previous call: counters as deltas, gauges as values (Workers log lines). */
  drain(): Array<{ metric: MetricName; labels: Labels; value: number }> {
    const out: Array<{ metric: MetricName; labels: Labels; value: number }> = [];
    for (const [key, entry] of this.values) {
      const before = this.flushed.get(key) ?? 0;
      if (entry.value === before) continue;
      const delta = METRICS[entry.name].type === 'counter' ? entry.value - before : entry.value;
      out.push({ metric: entry.name, labels: entry.labels, value: delta });
      this.flushed.set(key, entry.value);
    }
    return out;
  }

  private entry(name: MetricName, labels: Labels) {
    const key = seriesKey(name, labels);
    let entry = this.values.get(key);
    if (!entry) this.values.set(key, (entry = { name, labels: { ...labels }, value: 0 }));
    return entry;
  }
}

function seriesKey(name: string, labels: Labels): string {
  return `${name}${renderLabels(labels)}`;
}

function renderLabels(labels: Labels): string {
  const keys = Object.keys(labels).sort();
  if (keys.length === 0) return '';
  return `{${keys.map((k) => `${k}="${labels[k]!.replace(/[\\"\n]/g, (c) => (c === '\n' ? '\\n' : `\\${c}`))}"`).join(',')}}`;
}
