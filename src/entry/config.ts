/**
 * Outpost's configuration: read once from string variables (the process environment on Node,
 * vars and secrets on Workers) and from the configuration document (OUTPOST_CONFIG inline, or
 * on Node the file OUTPOST_CONFIG_FILE names, whose text the Node entry passes in), validated,
 * and turned into a typed object. Every problem is reported at start-up, all at once.
 * Runtime-agnostic: no node:* imports. The document's sections are parsed in ./config/.
 */
import type { MirrorConfig } from '../core/mirror/config.js';
import { MAX_MANIFEST_BYTES } from '../core/oci/manifest.js';
import { DEFAULT_MAX_BLOB_BYTES } from '../core/registry/context.js';
import type { GcConfig } from '../core/gc/config.js';
import type { GatePolicy } from '../core/gate/gate.js';
import type { AuthConfig, ImmutableTagRule } from '../core/auth/config.js';
import { defaultDocument, readDocument, type ConfigDocument } from './config/document.js';
import type { StoreKind } from './config/values.js';
import { isLogLevel, LOG_LEVELS, type LogLevel } from './log.js';

export interface S3Config {
  endpoint?: string;
  region: string;
  bucket: string;
  prefix: string;
  forcePathStyle: boolean;
  accessKeyId?: string;
  secretAccessKey?: string;
  partBytes: number;
}

export interface DynamoConfig {
  endpoint?: string;
  region: string;
  table: string;
  accessKeyId?: string;
  secretAccessKey?: string;
}

export type StoreConfig = { kind: 'local'; dataDir: string } | { kind: 'cloud'; s3: S3Config; dynamodb: DynamoConfig };

export interface Config {
  host: string;
  port: number;
  store: StoreConfig;
  /** Seconds an idle upload is kept. */
  uploadTtlSeconds: number;
  /** When > 0 and the store can presign, blob GETs redirect to the store for this many seconds. */
  redirectSeconds: number;
  /** Smallest chunk clients are asked to PATCH (OCI-Chunk-Min-Length); 0 asks nothing. */
  chunkMinBytes: number;
  /** The largest blob pushed, uploaded or mirrored, in bytes; longer ones are refused before they are stored. */
  maxBlobBytes: number;
  /** Upstreams, hosted prefixes and fill tuning from the configuration document (defaults without one). */
  mirror: MirrorConfig;
  /** Garbage collection: the grace period, and how often a Node server runs it (the document's `gc:`). */
  gc: GcConfig;
  /** Signature policies (the document's `policies:`): none gates nothing. */
  policies: GatePolicy[];
  /** Users, token keys and access rules (the document's `auth:`); absent without it, when every request is served. */
  auth?: AuthConfig;
  /** Tags that never move once set (the document's `immutableTags:`). */
  immutableTags: ImmutableTagRule[];
  /** On SIGTERM/SIGINT, how long requests in flight may take before their connections are cut (Node). */
  shutdownSeconds: number;
  /** The least severe structured log line written (the access log is at info). */
  logLevel: LogLevel;
}

/** The configuration document as the entry point obtained it; readConfig never touches a file system. */
export interface ConfigInput {
  /** The document's text (on Node: the contents of the file OUTPOST_CONFIG_FILE names). */
  configText?: string;
  /** Where the text came from (the file's path), named in every problem about it. */
  configSource?: string;
  /** Why the entry point could not read the document (a missing or unreadable file), reported with the other problems. */
  configReadError?: string;
  /** Reads a file the document names (keys, trusted roots), relative to the document (Node only). */
  readFile?: (path: string) => string | { error: string };
  /** The shipped Sigstore public-good trusted root (entry/public-good.ts), for `trustedRoot: sigstore-public-good`. */
  publicGoodRoot?: () => string;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/** Every setting, with its meaning; the README's configuration reference mirrors this table. */
export const CONFIG_VARIABLES = {
  OUTPOST_HOST: 'address to listen on (Node; default 127.0.0.1)',
  OUTPOST_PORT: 'TCP port to listen on (Node; default 5000)',
  OUTPOST_STORE: '"local" (filesystem + SQLite, the Node default) or "cloud" (S3 + DynamoDB, always on Workers)',
  OUTPOST_DATA_DIR: 'directory of the local store (default ./data)',
  OUTPOST_UPLOAD_TTL_SECONDS: 'how long an idle blob upload is kept (default 86400)',
  OUTPOST_REDIRECT_SECONDS: 'redirect blob downloads to presigned store URLs valid this long; 0 serves them directly (default 0)',
  OUTPOST_CHUNK_MIN_BYTES: 'smallest chunk clients are asked to PATCH, sent as OCI-Chunk-Min-Length; 0 sends nothing (default 0)',
  OUTPOST_MAX_BLOB_BYTES: 'largest blob pushed, uploaded or mirrored, in bytes, from 4 MiB to 5 TiB; a longer one is refused before it is stored (default 68719476736, 64 GiB)',
  OUTPOST_SHUTDOWN_SECONDS: 'on SIGTERM or SIGINT, how long requests in flight may finish before their connections are cut (Node; default 25)',
  OUTPOST_LOG_LEVEL: 'least severe log line written: debug, info, warn, error or off; the access log is at info (default info)',
  OUTPOST_CONFIG: 'the configuration document inline, YAML or JSON: upstreams, hosted prefixes, mirror tuning, gc, signature policies, auth (users, token keys, access rules), immutable tags (default none)',
  OUTPOST_CONFIG_FILE: 'path of the configuration document, YAML or JSON (Node; default none)',
  OUTPOST_S3_ENDPOINT: 'S3 endpoint URL (default: AWS for the region)',
  OUTPOST_S3_REGION: 'S3 region (default us-east-1; "auto" for R2)',
  OUTPOST_S3_BUCKET: 'bucket for blobs (required for cloud)',
  OUTPOST_S3_PREFIX: 'key prefix inside the bucket (default none)',
  OUTPOST_S3_FORCE_PATH_STYLE: 'path-style bucket addressing: true or false (default true when an endpoint is set)',
  OUTPOST_S3_ACCESS_KEY_ID: 'S3 access key (secret; default: the SDK credential chain on Node)',
  OUTPOST_S3_SECRET_ACCESS_KEY: 'S3 secret key (secret)',
  OUTPOST_S3_PART_BYTES: 'multipart part size in bytes, at least 5 MiB (default 8388608)',
  OUTPOST_DYNAMODB_ENDPOINT: 'DynamoDB endpoint URL (default: AWS for the region)',
  OUTPOST_DYNAMODB_REGION: 'DynamoDB region (default us-east-1)',
  OUTPOST_DYNAMODB_TABLE: 'table of the metadata index (required for cloud)',
  OUTPOST_DYNAMODB_ACCESS_KEY_ID: 'DynamoDB access key (secret; default: the S3 keys)',
  OUTPOST_DYNAMODB_SECRET_ACCESS_KEY: 'DynamoDB secret key (secret)',
} as const;

export type ConfigVariable = keyof typeof CONFIG_VARIABLES;

/** Settings that only mean something to a process that listens and has a disk. */
const NODE_ONLY: ConfigVariable[] = ['OUTPOST_HOST', 'OUTPOST_PORT', 'OUTPOST_DATA_DIR', 'OUTPOST_SHUTDOWN_SECONDS'];

/**
 * Below the usual supervisors' kill timeouts (Kubernetes waits 30 s, systemd 90 s by default),
 * so requests are drained by Outpost rather than cut by a SIGKILL.
 */
const DEFAULT_SHUTDOWN_SECONDS = 25;

export function readConfig(env: Record<string, unknown>, runtime: 'node' | 'workers' = 'node', input: ConfigInput = {}): Config {
  const problems: string[] = [];
  const get = (name: ConfigVariable): string | undefined => {
    const v = env[name];
    return typeof v === 'string' && v.trim() !== '' ? v.trim() : undefined;
  };
  const kind = get('OUTPOST_STORE') ?? (runtime === 'workers' ? 'cloud' : 'local');
  const { document, problems: documentProblems, referenced } = readConfigDocument(env, runtime, kind === 'cloud' ? 'cloud' : 'local', input, get);
  for (const key of Object.keys(env)) {
    if (key.startsWith('OUTPOST_') && !(key in CONFIG_VARIABLES) && !referenced.has(key)) {
      problems.push(`${key} is not a known setting (known: ${Object.keys(CONFIG_VARIABLES).join(', ')})`);
    }
  }
  if (runtime === 'workers') {
    for (const name of NODE_ONLY) if (get(name) !== undefined) problems.push(`${name} does not apply on Workers; remove it`);
    if (get('OUTPOST_STORE') === 'local') problems.push('OUTPOST_STORE must be "cloud" on Workers (there is no local disk)');
  }
  const host = get('OUTPOST_HOST') ?? '127.0.0.1';
  if (!/^[A-Za-z0-9.:[\]-]+$/.test(host)) problems.push(`OUTPOST_HOST must be an IP address or host name, got "${host}"`);
  const port = integer(get('OUTPOST_PORT'), 5000, 'OUTPOST_PORT', 0, 65535, problems);
  const uploadTtlSeconds = integer(get('OUTPOST_UPLOAD_TTL_SECONDS'), 86_400, 'OUTPOST_UPLOAD_TTL_SECONDS', 60, 30 * 86_400, problems);
  // SigV4 presigned URLs are valid for at most 7 days.
  const redirectSeconds = integer(get('OUTPOST_REDIRECT_SECONDS'), 0, 'OUTPOST_REDIRECT_SECONDS', 0, 7 * 86_400, problems);
  const chunkMinBytes = integer(get('OUTPOST_CHUNK_MIN_BYTES'), 0, 'OUTPOST_CHUNK_MIN_BYTES', 0, 5 * 1024 * 1024 * 1024, problems);
  // Manifests are stored as blobs, so the cap is at least theirs; S3 holds at most 5 TiB per object.
  const maxBlobBytes = integer(get('OUTPOST_MAX_BLOB_BYTES'), DEFAULT_MAX_BLOB_BYTES, 'OUTPOST_MAX_BLOB_BYTES', MAX_MANIFEST_BYTES, 5 * 1024 ** 4, problems);
  const shutdownSeconds = integer(get('OUTPOST_SHUTDOWN_SECONDS'), DEFAULT_SHUTDOWN_SECONDS, 'OUTPOST_SHUTDOWN_SECONDS', 0, 3600, problems);
  const logLevel = get('OUTPOST_LOG_LEVEL') ?? 'info';
  if (!isLogLevel(logLevel)) problems.push(`OUTPOST_LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}, got "${logLevel.slice(0, 80)}"`);

  let store: StoreConfig;
  if (kind === 'local') {
    store = { kind: 'local', dataDir: get('OUTPOST_DATA_DIR') ?? './data' };
  } else if (kind === 'cloud') {
    store = { kind: 'cloud', s3: readS3(get, problems), dynamodb: readDynamo(get, problems) };
  } else {
    problems.push(`OUTPOST_STORE must be "local" or "cloud", got "${kind}"`);
    store = { kind: 'local', dataDir: './data' };
  }
  problems.push(...documentProblems);
  if (problems.length > 0) throw new ConfigError(problems);
  return {
    host,
    port,
    store,
    uploadTtlSeconds,
    redirectSeconds,
    chunkMinBytes,
    maxBlobBytes,
    mirror: document.mirror,
    gc: document.gc,
    policies: document.policies,
    ...(document.auth ? { auth: document.auth } : {}),
    immutableTags: document.immutableTags,
    shutdownSeconds,
    logLevel: isLogLevel(logLevel) ? logLevel : 'info',
  };
}

/**
 * The document from one of its two places: OUTPOST_CONFIG (the text itself, the only way on
 * Workers) or OUTPOST_CONFIG_FILE (Node; the entry point reads the file and passes its text).
 */
function readConfigDocument(
  env: Record<string, unknown>,
  runtime: 'node' | 'workers',
  store: StoreKind,
  input: ConfigInput,
  get: (name: ConfigVariable) => string | undefined,
): { document: ConfigDocument; problems: string[]; referenced: Set<string> } {
  const none = (problems: string[]) => ({ document: defaultDocument(runtime, store), problems, referenced: new Set<string>() });
  const raw = env.OUTPOST_CONFIG;
  // Not trimmed: the first line's indentation is part of the YAML.
  const inline = typeof raw === 'string' && raw.trim() !== '' ? raw : undefined;
  if (raw !== undefined && typeof raw !== 'string') {
    return none(['OUTPOST_CONFIG must be a string holding the YAML or JSON document (in wrangler.toml: OUTPOST_CONFIG = """...""")']);
  }
  const file = get('OUTPOST_CONFIG_FILE');
  if (runtime === 'workers' && file !== undefined) {
    return none(['OUTPOST_CONFIG_FILE does not apply on Workers; use the OUTPOST_CONFIG var']);
  }
  const fromFile = file !== undefined || input.configText !== undefined || input.configReadError !== undefined;
  if (inline !== undefined && fromFile) {
    return none(['OUTPOST_CONFIG and OUTPOST_CONFIG_FILE are both set; give the configuration document one way, not two']);
  }
  if (input.configReadError !== undefined) return none([input.configReadError]);
  let text: string;
  let source: string;
  if (inline !== undefined) {
    text = inline;
    source = 'OUTPOST_CONFIG';
  } else if (input.configText !== undefined) {
    text = input.configText;
    source = input.configSource ?? file ?? 'the configuration document';
  } else if (file !== undefined) {
    // A document named but never read would leave every setting in it silently off.
    return none([`OUTPOST_CONFIG_FILE is set to "${file.slice(0, 80)}" but this entry point did not read it`]);
  } else {
    return none([]);
  }
  return readDocument({ text, source, env, runtime, store, readFile: input.readFile, publicGoodRoot: input.publicGoodRoot });
}

function readS3(get: (name: ConfigVariable) => string | undefined, problems: string[]): S3Config {
  const endpoint = url(get('OUTPOST_S3_ENDPOINT'), 'OUTPOST_S3_ENDPOINT', problems);
  const bucket = get('OUTPOST_S3_BUCKET');
  if (!bucket) problems.push('OUTPOST_S3_BUCKET is required when OUTPOST_STORE is "cloud"');
  const forcePathStyle = boolean(get('OUTPOST_S3_FORCE_PATH_STYLE'), endpoint !== undefined, 'OUTPOST_S3_FORCE_PATH_STYLE', problems);
  const keys = credentials(get('OUTPOST_S3_ACCESS_KEY_ID'), get('OUTPOST_S3_SECRET_ACCESS_KEY'), 'OUTPOST_S3', problems);
  return {
    endpoint,
    region: get('OUTPOST_S3_REGION') ?? 'us-east-1',
    bucket: bucket ?? '',
    prefix: get('OUTPOST_S3_PREFIX') ?? '',
    forcePathStyle,
    ...keys,
    partBytes: integer(get('OUTPOST_S3_PART_BYTES'), 8 * 1024 * 1024, 'OUTPOST_S3_PART_BYTES', 5 * 1024 * 1024, 5 * 1024 * 1024 * 1024, problems),
  };
}

function readDynamo(get: (name: ConfigVariable) => string | undefined, problems: string[]): DynamoConfig {
  const table = get('OUTPOST_DYNAMODB_TABLE');
  if (!table) problems.push('OUTPOST_DYNAMODB_TABLE is required when OUTPOST_STORE is "cloud"');
  const own = credentials(get('OUTPOST_DYNAMODB_ACCESS_KEY_ID'), get('OUTPOST_DYNAMODB_SECRET_ACCESS_KEY'), 'OUTPOST_DYNAMODB', problems);
  const shared = own.accessKeyId ? own : credentials(get('OUTPOST_S3_ACCESS_KEY_ID'), get('OUTPOST_S3_SECRET_ACCESS_KEY'), 'OUTPOST_S3', []);
  return {
    endpoint: url(get('OUTPOST_DYNAMODB_ENDPOINT'), 'OUTPOST_DYNAMODB_ENDPOINT', problems),
    region: get('OUTPOST_DYNAMODB_REGION') ?? 'us-east-1',
    table: table ?? '',
    ...shared,
  };
}

function credentials(id: string | undefined, secret: string | undefined, prefix: string, problems: string[]) {
  if ((id === undefined) !== (secret === undefined)) {
    problems.push(`${prefix}_ACCESS_KEY_ID and ${prefix}_SECRET_ACCESS_KEY must be set together`);
  }
  return id && secret ? { accessKeyId: id, secretAccessKey: secret } : {};
}

function url(raw: string | undefined, name: string, problems: string[]): string | undefined {
  if (raw === undefined) return undefined;
  if (!/^https?:\/\/[^\s/]+(\/.*)?$/.test(raw)) problems.push(`${name} must be an http(s) URL, got "${raw}"`);
  return raw;
}

function boolean(raw: string | undefined, fallback: boolean, name: string, problems: string[]): boolean {
  if (raw === undefined) return fallback;
  if (raw === 'true') return true;
  if (raw === 'false') return false;
  problems.push(`${name} must be true or false, got "${raw}"`);
  return fallback;
}

function integer(raw: string | undefined, fallback: number, name: string, min: number, max: number, problems: string[]): number {
  if (raw === undefined) return fallback;
  if (!/^\d+$/.test(raw) || Number(raw) < min || Number(raw) > max) {
    problems.push(`${name} must be an integer from ${min} to ${max}, got "${raw}"`);
    return fallback;
  }
  return Number(raw);
}
