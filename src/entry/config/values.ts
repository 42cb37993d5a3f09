/**
 * The value vocabulary of the configuration document, shared by every section parser: key
 * paths, problems, mappings with known keys, and the scalar kinds (strings, booleans, lists,
 * durations, sizes, regular expressions, repository globs). Each reader records what is wrong
 * at its key path and returns a fallback, so one pass reports every problem at once.
 * Runtime-agnostic: no node:* imports.
 */
import { compileGlob } from '../../core/glob.js';
import type { UpstreamConfig } from '../../core/mirror/config.js';

/**
 * Quoted values are cut at this many characters: a document may hold up to 1 MiB in one
 * scalar, and a start-up error (logged, and on Workers sent in the response) must stay short.
 */
export const MAX_QUOTED_CHARS = 80;

/** Collects problems, each prefixed with the document's source and the key path it is about. */
export class Problems {
  readonly list: string[] = [];
  constructor(private readonly source: string) {}

  at(path: string, message: string): void {
    this.list.push(`${this.source}: ${path === '' ? '' : `${path}: `}${message}`);
  }
}

/** The embedded store (files and SQLite) or the cloud one (S3 and DynamoDB). */
export type StoreKind = 'local' | 'cloud';

/** What a section parser may read besides its own value. */
export interface SectionContext {
  problems: Problems;
  /** The variables (Node) or vars and secrets (Workers) readConfig was given. */
  env: Record<string, unknown>;
  runtime: 'node' | 'workers';
  /** The store it runs on (OUTPOST_STORE): the fill parts' default and smallest size depend on it. */
  store: StoreKind;
  /** Variables the document names (passwordEnv): they are not unknown OUTPOST_* settings. */
  referenced: Set<string>;
  /** Reads a file the document names (a key, a trusted root): Node only; the text, or why not. */
  readFile?: (path: string) => string | { error: string };
  /** The Sigstore public-good trusted_root.json the entry ships (entry/public-good.ts). */
  publicGoodRoot?: () => string;
}

/** `upstreams` + `name` -> `upstreams.name`; keys that are not identifiers are quoted. */
export function child(path: string, key: string): string {
  if (/^[A-Za-z_][A-Za-z0-9_-]*$/.test(key) && key.length <= MAX_QUOTED_CHARS) return path === '' ? key : `${path}.${key}`;
  return `${path}[${quote(key)}]`;
}

export function item(path: string, index: number): string {
  return `${path}[${index}]`;
}

/** A string as JSON, cut to MAX_QUOTED_CHARS. */
export function quote(value: string): string {
  const cut = value.length > MAX_QUOTED_CHARS ? `${value.slice(0, MAX_QUOTED_CHARS)}...` : value;
  return JSON.stringify(cut);
}

/** What a value is, for "got ..." in a message, never longer than a quoted value. */
export function describe(value: unknown): string {
  if (typeof value === 'string') return quote(value);
  if (value === null || value === undefined) return 'nothing';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  return String(value).slice(0, MAX_QUOTED_CHARS);
}

export type Mapping = Record<string, unknown>;

export interface MappingRules {
  /** Keys this mapping may hold. */
  known: readonly string[];
  /** Keys that are refused with their own explanation (a literal secret, a feature not built yet). */
  refused?: Readonly<Record<string, string>>;
}

/**
 * A mapping whose keys are all known. Unknown keys are refused, naming the known ones: a
 * misspelt key silently ignored is a setting the operator believes is on.
 */
export function mapping(value: unknown, path: string, problems: Problems, rules: MappingRules): Mapping | undefined {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    problems.at(path, `must be a mapping with the keys ${rules.known.join(', ')}, got ${describe(value)}`);
    return undefined;
  }
  const entries = value as Mapping;
  for (const key of Object.keys(entries)) {
    const refused = rules.refused?.[key];
    if (refused !== undefined) problems.at(child(path, key), refused);
    else if (!rules.known.includes(key)) problems.at(child(path, key), `unknown key; the known keys are ${rules.known.join(', ')}`);
  }
  return entries;
}

/** The value of `key` in a mapping, when present (own keys only: the document decides, not Object.prototype). */
export function field(entries: Mapping, key: string): unknown {
  return Object.hasOwn(entries, key) ? entries[key] : undefined;
}

export function string(value: unknown, path: string, problems: Problems): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value === '') {
    problems.at(path, `must be a non-empty string, got ${describe(value)}`);
    return undefined;
  }
  return value;
}

export function required(value: unknown, path: string, problems: Problems, what: string): string | undefined {
  if (value === undefined || value === null) {
    problems.at(path, `is required (${what})`);
    return undefined;
  }
  return string(value, path, problems);
}

export function boolean(value: unknown, path: string, problems: Problems, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') {
    problems.at(path, `must be true or false, got ${describe(value)}`);
    return fallback;
  }
  return value;
}

export function list(value: unknown, path: string, problems: Problems): unknown[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) {
    problems.at(path, `must be a list, got ${describe(value)}`);
    return [];
  }
  return value;
}

/** A list of strings; each element that is not one is reported at its index and left out. */
export function stringList(value: unknown, path: string, problems: Problems): { value: string; path: string }[] {
  const out: { value: string; path: string }[] = [];
  list(value, path, problems).forEach((element, i) => {
    const s = string(element, item(path, i), problems);
    if (s !== undefined) out.push({ value: s, path: item(path, i) });
  });
  return out;
}

/** An integer within the range; the fallback when absent. */
export function integer(value: unknown, path: string, problems: Problems, range: Range): number {
  if (value === undefined) return range.fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < range.min || value > range.max) {
    problems.at(path, `must be an integer from ${range.min} to ${range.max}, got ${describe(value)}`);
    return range.fallback;
  }
  return value;
}

/** `raw` as an http(s) URL with a host, or undefined when it is not one. */
export function httpUrl(raw: string): URL | undefined {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return undefined;
  }
  return (url.protocol === 'https:' || url.protocol === 'http:') && url.host !== '' ? url : undefined;
}

/** A variable or secret name, as shells and wrangler accept them. */
const VARIABLE = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * The name of a variable (Node) or var or secret (Workers) that the document names at `path`
 * (`passwordEnv: HUB_TOKEN`). It is marked referenced, so an `OUTPOST_*` one is not refused as
 * an unknown setting, even when the value it holds is refused.
 */
export function variableName(value: unknown, path: string, ctx: SectionContext): string | undefined {
  const name = string(value, path, ctx.problems);
  if (name === undefined) return undefined;
  if (!VARIABLE.test(name)) {
    ctx.problems.at(path, `must be the name of a variable, like HUB_TOKEN, got ${quote(name)}`);
    return undefined;
  }
  ctx.referenced.add(name);
  return name;
}

/** What the variable `name` holds: a non-empty string, or a problem at `path` saying what it would have held. */
export function variableValue(name: string, path: string, ctx: SectionContext, holds: string): string | undefined {
  const value = ctx.env[name];
  if (value === undefined || value === '') {
    ctx.problems.at(path, `the ${variableKind(ctx)} ${name} is not set (it holds ${holds})`);
    return undefined;
  }
  if (typeof value !== 'string') {
    ctx.problems.at(path, `the ${variableKind(ctx)} ${name} is not a string`);
    return undefined;
  }
  return value;
}

/** What a variable is called on this runtime, in messages. */
export function variableKind(ctx: SectionContext): string {
  return ctx.runtime === 'workers' ? 'var or secret' : 'environment variable';
}

const DURATION_UNITS_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** 90000 -> "90s", 86400000 -> "1d": the largest unit that divides the duration. */
export function formatDuration(ms: number): string {
  for (const unit of ['d', 'h', 'm', 's'] as const) {
    if (ms !== 0 && ms % DURATION_UNITS_MS[unit] === 0) return `${ms / DURATION_UNITS_MS[unit]}${unit}`;
  }
  return ms === 0 ? '0s' : `${ms}ms`;
}

export interface Range {
  min: number;
  max: number;
  fallback: number;
}

/** A duration: an integer and one unit of ms, s, m, h or d (`30s`, `5m`, `24h`). Returns milliseconds. */
export function duration(value: unknown, path: string, problems: Problems, range: Range): number {
  if (value === undefined) return range.fallback;
  const m = typeof value === 'string' ? /^(\d{1,12})(ms|s|m|h|d)$/.exec(value.trim()) : null;
  if (!m) {
    problems.at(path, `must be a duration like 30s, 5m, 24h, got ${describe(value)}`);
    return range.fallback;
  }
  const ms = Number(m[1]) * DURATION_UNITS_MS[m[2] as keyof typeof DURATION_UNITS_MS];
  if (ms < range.min || ms > range.max) {
    problems.at(path, `must be from ${formatDuration(range.min)} to ${formatDuration(range.max)}, got ${describe(value)}`);
    return range.fallback;
  }
  return ms;
}

const SIZE_UNITS = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3, TiB: 1024 ** 4, kB: 1000, KB: 1000, MB: 1000 ** 2, GB: 1000 ** 3, TB: 1000 ** 4 } as const;

/** 8388608 -> "8MiB": the largest binary unit that divides the size. */
export function formatSize(bytes: number): string {
  for (const unit of ['TiB', 'GiB', 'MiB', 'KiB'] as const) {
    if (bytes !== 0 && bytes % SIZE_UNITS[unit] === 0) return `${bytes / SIZE_UNITS[unit]}${unit}`;
  }
  return `${bytes}`;
}

/** A size: bytes as an integer, or an integer with a unit (`512KiB`, `8MiB`, `1GiB`, `8MB`). Returns bytes. */
export function size(value: unknown, path: string, problems: Problems, range: Range): number {
  if (value === undefined) return range.fallback;
  let bytes: number | undefined;
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) bytes = value;
  const m = typeof value === 'string' ? /^(\d{1,12}) ?(B|KiB|MiB|GiB|TiB|kB|KB|MB|GB|TB)?$/.exec(value.trim()) : null;
  if (m) bytes = Number(m[1]) * SIZE_UNITS[(m[2] ?? 'B') as keyof typeof SIZE_UNITS];
  if (bytes === undefined) {
    problems.at(path, `must be a size: bytes as an integer, or like 512KiB, 8MiB, 1GiB, 2TiB, 8MB; got ${describe(value)}`);
    return range.fallback;
  }
  if (bytes < range.min || bytes > range.max) {
    problems.at(path, `must be from ${formatSize(range.min)} to ${formatSize(range.max)}, got ${describe(value)}`);
    return range.fallback;
  }
  return bytes;
}

/** A regular expression, anchored at both ends (a tag filter must match the whole tag). */
export function anchoredRegExp(value: unknown, path: string, problems: Problems): RegExp | undefined {
  const source = string(value, path, problems);
  if (source === undefined) return undefined;
  try {
    return new RegExp(`^(?:${source})$`);
  } catch (err) {
    // V8 repeats the whole pattern in its message; keep only the reason.
    const reason = String((err as Error).message).replace(/^Invalid regular expression: \/.*\/[a-z]*: /s, '');
    problems.at(path, `is not a valid regular expression (${reason.slice(0, MAX_QUOTED_CHARS)}): ${quote(source)}`);
    return undefined;
  }
}

/**
 * Characters of a repository glob (src/core/glob.ts): those of repository names, `/`, and `*`.
 * Anything else (upper case, spaces) could never match a repository, so it is a mistake.
 */
const GLOB_CHARACTERS = /^[a-z0-9._/*-]+$/;

export function globs(value: unknown, path: string, problems: Problems): RegExp[] {
  const out: RegExp[] = [];
  for (const glob of stringList(value, path, problems)) {
    if (!GLOB_CHARACTERS.test(glob.value)) {
      problems.at(glob.path, `a repository glob holds lower-case letters, digits, ".", "_", "-", "/" and * or **, got ${quote(glob.value)}`);
      continue;
    }
    out.push(compileGlob(glob.value));
  }
  return out;
}

/**
 * Globs over qualified repository names (signature policies, access rules, immutable tags):
 * mirrored repositories are named by their upstream's namespace (`docker.io/library/nginx`), so
 * a glob that starts with an alias would match nothing; it is refused, naming the qualified form.
 */
export function qualifiedGlobs(value: unknown, path: string, problems: Problems, upstreams: readonly UpstreamConfig[]): RegExp[] {
  const compiled = globs(value, path, problems);
  // Elements that are not strings were reported by globs().
  stringList(value, path, new Problems('')).forEach(({ value: glob, path: globPath }) => {
    const first = glob.split('/')[0]!;
    const upstream = upstreams.find((u) => u.name === first && u.namespace !== first);
    if (upstream) problems.at(globPath, `names the alias of upstream "${upstream.name}"; mirrored repositories are named by its namespace: ${quote(`${upstream.namespace}/${glob.slice(first.length + 1)}`)}`);
  });
  return compiled;
}
