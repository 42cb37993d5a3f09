/**
 * Outpost's structured log: one JSON object per line, `{"time","level","msg",...}`, filtered by
 * OUTPOST_LOG_LEVEL. The access log (src/http/access-log.ts) writes at info, upstream client
 * events at info (retries and insecure token realms at warn), the mirror's fill events at info
 * (fill.lead, fill.commit) and warn (fill.retry, fill.resume, fill.fail), the Workers metrics
 * lines at info.
 * Runtime-agnostic: the entry point passes the line writer (process.stdout on Node, console.log
 * on Workers). The start-up line, shutdown notices and configuration errors are plain
 * `outpost: ...` lines outside this log and are always written.
 */

/** From the most to the least verbose; `off` writes nothing. */
export const LOG_LEVELS = ['debug', 'info', 'warn', 'error', 'off'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export type EventLevel = Exclude<LogLevel, 'off'>;

export interface Log {
  /** Whether a line at `level` would be written: callers skip building records nobody reads. */
  enabled(level: EventLevel): boolean;
  /** Writes one line at `level` when enabled; `fields` should carry a `msg`. Never throws. */
  write(level: EventLevel, fields: object): void;
  /**
   * Writes one line at info whatever the threshold, unless the log is `off`: the audit log,
   * which a level chosen to quieten the access log must not silence.
   */
  always(fields: object): void;
}

export function isLogLevel(value: string): value is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(value);
}

/** The time of a line: formatted once per millisecond, not once per line (a busy server writes many a millisecond). */
let lastMs = 0;
let lastTime = '';
function timestamp(): string {
  const ms = Date.now();
  if (ms !== lastMs) {
    lastMs = ms;
    lastTime = new Date(ms).toISOString();
  }
  return lastTime;
}

export function createLog(threshold: LogLevel, writeLine: (line: string) => void): Log {
  const rank = LOG_LEVELS.indexOf(threshold);
  const enabled = (level: EventLevel) => LOG_LEVELS.indexOf(level) >= rank;
  const line = (level: EventLevel, fields: object) => {
    try {
      writeLine(JSON.stringify({ time: timestamp(), level, ...fields }));
    } catch {
      // A log line must never fail the request it describes (a closed stdout, a cycle).
    }
  };
  return {
    enabled,
    write(level, fields) {
      if (enabled(level)) line(level, fields);
    },
    always(fields) {
      if (threshold !== 'off') line('info', fields);
    },
  };
}
