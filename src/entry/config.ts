import { resolve } from 'node:path';

/**
 * Outpost's configuration for the Node entry: read once from the environment, validated, and
 * turned into a typed object. Every problem is reported at start-up, all at once.
 */
export interface NodeConfig {
  host: string;
  port: number;
  /** Root of the embedded store: content under <dataDir>/blobs, uploads under <dataDir>/uploads, the index in <dataDir>/index.db. */
  dataDir: string;
  /** Seconds an idle upload is kept. */
  uploadTtlSeconds: number;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

export const CONFIG_VARIABLES = {
  OUTPOST_HOST: 'address to listen on (default 127.0.0.1)',
  OUTPOST_PORT: 'TCP port to listen on (default 5000)',
  OUTPOST_DATA_DIR: 'directory of the embedded store (default ./data)',
  OUTPOST_UPLOAD_TTL_SECONDS: 'how long an idle blob upload is kept (default 86400)',
} as const;

export function readNodeConfig(env: Record<string, string | undefined>): NodeConfig {
  const problems: string[] = [];
  for (const key of Object.keys(env)) {
    if (key.startsWith('OUTPOST_') && !(key in CONFIG_VARIABLES)) {
      problems.push(`${key} is not a known setting (known: ${Object.keys(CONFIG_VARIABLES).join(', ')})`);
    }
  }
  const host = env.OUTPOST_HOST ?? '127.0.0.1';
  if (host.trim() === '') problems.push('OUTPOST_HOST must not be empty');
  const port = integer(env.OUTPOST_PORT, 5000, 'OUTPOST_PORT', 0, 65535, problems);
  const dataDir = env.OUTPOST_DATA_DIR ?? './data';
  if (dataDir.trim() === '') problems.push('OUTPOST_DATA_DIR must not be empty');
  const uploadTtlSeconds = integer(env.OUTPOST_UPLOAD_TTL_SECONDS, 86_400, 'OUTPOST_UPLOAD_TTL_SECONDS', 60, 30 * 86_400, problems);
  if (problems.length > 0) throw new ConfigError(problems);
  return { host, port, dataDir: resolve(dataDir), uploadTtlSeconds };
}

function integer(raw: string | undefined, fallback: number, name: string, min: number, max: number, problems: string[]): number {
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw) || Number(raw) < min || Number(raw) > max) {
    problems.push(`${name} must be an integer from ${min} to ${max}, got "${raw}"`);
    return fallback;
  }
  return Number(raw);
}
