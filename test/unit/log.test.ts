import { describe, expect, it } from 'vitest';
import { createLog, LOG_LEVELS, type EventLevel } from '../../src/entry/log.js';

describe('the structured log', () => {
  it('writes one JSON object per line with time and level first', () => {
    const lines: string[] = [];
    createLog('info', (l) => lines.push(l)).write('info', { msg: 'access', status: 200 });
    expect(lines).toHaveLength(1);
    const parsed = JSON.parse(lines[0]!) as Record<string, unknown>;
    expect(Object.keys(parsed)).toEqual(['time', 'level', 'msg', 'status']);
    expect(parsed).toMatchObject({ level: 'info', msg: 'access', status: 200 });
    expect(new Date(parsed.time as string).toISOString()).toBe(parsed.time);
  });

  it.each(LOG_LEVELS.map((threshold) => [threshold] as const))('at %s writes that level and the more severe ones', (threshold) => {
    const lines: string[] = [];
    const log = createLog(threshold, (l) => lines.push(l));
    const events: EventLevel[] = ['debug', 'info', 'warn', 'error'];
    for (const level of events) log.write(level, { msg: level });
    const expected = threshold === 'off' ? [] : events.slice(events.indexOf(threshold));
    expect(lines.map((l) => (JSON.parse(l) as { level: string }).level)).toEqual(expected);
    expect(events.filter((l) => log.enabled(l))).toEqual(expected);
  });

  it('never throws, whatever the writer or the fields do', () => {
    const log = createLog('debug', () => {
      throw new Error('EPIPE');
    });
    expect(() => log.write('error', { msg: 'x' })).not.toThrow();
    const cyclic: Record<string, unknown> = { msg: 'cycle' };
    cyclic.self = cyclic;
    expect(() => createLog('debug', () => undefined).write('info', cyclic)).not.toThrow();
  });
});
