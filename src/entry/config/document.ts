/**
 * The configuration document: one YAML (or JSON, which is YAML) document for everything that is
 * more than a flat OUTPOST_* setting. This module parses it with limits and hands each
 * top-level section to its own parser; an unknown section (misspelt, or of a later version) is refused,
 * never ignored. Runtime-agnostic: the entry point passes the text in.
 */
import { LineCounter, parseDocument, type YAMLError } from 'yaml';
import { DEFAULT_GC_CONFIG, type GcConfig } from '../../core/gc/config.js';
import type { MirrorConfig } from '../../core/mirror/config.js';
import { readGc } from './gc.js';
import type { GatePolicy } from '../../core/gate/gate.js';
import type { AuthConfig, ImmutableTagRule } from '../../core/auth/config.js';
import { readAuth, readImmutableTags } from './auth.js';
import { readPolicies } from './policies.js';
import { defaultFillSettings, readMirror } from './mirror.js';
import { checkAliases, readHosted, readUpstreams } from './upstreams.js';
import { field, mapping, MAX_QUOTED_CHARS, Problems, type SectionContext, type StoreKind } from './values.js';

/**
 * A configuration document is a few kilobytes; 1 MiB bounds the memory and time parsing takes
 * at start-up (a Worker isolate has 128 MB) when a wrong path or var hands us something else.
 */
export const MAX_DOCUMENT_BYTES = 1024 * 1024;
/**
 * Aliases (`*rules`) may share a block between upstreams, but each alias expands to a copy:
 * this caps the expansion so a few lines cannot become gigabytes ("billion laughs").
 */
export const MAX_ALIAS_COUNT = 100;
/** Past this many syntax errors the rest are likely one mistake's echoes (or not YAML at all). */
const MAX_SYNTAX_ERRORS = 10;

/** What the document configures, typed; later sections add their own members. */
export interface ConfigDocument {
  mirror: MirrorConfig;
  gc: GcConfig;
  policies: GatePolicy[];
  /** Authentication and access rules (`auth:`); absent without the section, when every request is served. */
  auth?: AuthConfig;
  immutableTags: ImmutableTagRule[];
}

export function defaultDocument(runtime: 'node' | 'workers', store: StoreKind): ConfigDocument {
  return { mirror: { upstreams: [], hosted: [], ...defaultFillSettings(runtime, store) }, gc: DEFAULT_GC_CONFIG, policies: [], immutableTags: [] };
}

const SECTIONS = ['upstreams', 'hosted', 'mirror', 'gc', 'policies', 'auth', 'immutableTags'] as const;

export interface DocumentInput {
  text: string;
  /** Reads a file the document names (keys, trusted roots), relative to the document: Node only. */
  readFile?: (path: string) => string | { error: string };
  /** The shipped Sigstore public-good trusted root (entry/public-good.ts). */
  publicGoodRoot?: () => string;
  /** Where the text came from (a file's path, or OUTPOST_CONFIG), first in every problem. */
  source: string;
  env: Record<string, unknown>;
  runtime: 'node' | 'workers';
  store: StoreKind;
}

export interface DocumentResult {
  document: ConfigDocument;
  problems: string[];
  /** Variables the document names (passwordEnv), so they are not refused as unknown settings. */
  referenced: Set<string>;
}

export function readDocument(input: DocumentInput): DocumentResult {
  const problems = new Problems(input.source);
  const ctx: SectionContext = { problems, env: input.env, runtime: input.runtime, store: input.store, referenced: new Set(), readFile: input.readFile, publicGoodRoot: input.publicGoodRoot };
  const value = parse(input.text, input.source, problems);
  const document = problems.list.length > 0 ? defaultDocument(ctx.runtime, ctx.store) : readSections(value, ctx);
  return { document, problems: problems.list, referenced: ctx.referenced };
}

/** YAML text to plain values, or problems: too large, a syntax error, too many aliases. */
function parse(text: string, source: string, problems: Problems): unknown {
  // A UTF-16 unit is at least one UTF-8 byte, so only a short enough text needs encoding.
  const bytes = text.length > MAX_DOCUMENT_BYTES ? text.length : new TextEncoder().encode(text).byteLength;
  if (bytes > MAX_DOCUMENT_BYTES) {
    problems.at('', `the document is larger than ${MAX_DOCUMENT_BYTES} bytes (1 MiB), the most Outpost reads`);
    return undefined;
  }
  const lineCounter = new LineCounter();
  let doc;
  try {
    doc = parseDocument(text, {
      lineCounter,
      prettyErrors: false,
      // YAML 1.2 core schema: `yes` and `on` are strings, not booleans; no `<<` merge keys.
      version: '1.2',
      schema: 'core',
      merge: false,
      // A key written twice is a mistake whichever copy wins.
      uniqueKeys: true,
      stringKeys: true,
      strict: true,
      // Not 'silent', which also drops the error for a second document.
      logLevel: 'error',
    });
  } catch (err) {
    // Deep nesting can exhaust the stack before the parser reports anything.
    problems.at('', `cannot be parsed as YAML: ${String((err as Error).message).slice(0, MAX_QUOTED_CHARS)}`);
    return undefined;
  }
  // Warnings (an unknown !tag, a %YAML directive of another version) change what a value means.
  const found = [...doc.errors, ...doc.warnings];
  for (const err of found.slice(0, MAX_SYNTAX_ERRORS)) problems.list.push(syntaxProblem(err, source, lineCounter));
  if (found.length > MAX_SYNTAX_ERRORS) problems.at('', `and ${found.length - MAX_SYNTAX_ERRORS} more YAML errors`);
  if (found.length > 0) return undefined;
  try {
    return doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (err) {
    problems.at('', `cannot be read: ${String((err as Error).message).slice(0, 2 * MAX_QUOTED_CHARS)} (at most ${MAX_ALIAS_COUNT} alias expansions)`);
    return undefined;
  }
}

/** `source:line:column: message`, the message without the source excerpt prettyErrors would add. */
function syntaxProblem(err: YAMLError, source: string, lineCounter: LineCounter): string {
  const { line, col } = lineCounter.linePos(err.pos[0]);
  const message = err.message.split('\n')[0]!.slice(0, 2 * MAX_QUOTED_CHARS);
  return `${source}:${line}:${col}: ${message}`;
}

function readSections(value: unknown, ctx: SectionContext): ConfigDocument {
  const document = defaultDocument(ctx.runtime, ctx.store);
  // An empty document (or one of comments only) configures nothing.
  if (value === null || value === undefined) return document;
  // An unknown section (a misspelt one, or one of a later version) is refused, never ignored.
  const sections = mapping(value, '', ctx.problems, { known: SECTIONS });
  if (!sections) return document;
  // `mirror:` with nothing under it is the section left empty, not a mistake.
  const section = (key: (typeof SECTIONS)[number]) => field(sections, key) ?? undefined;
  const upstreams = readUpstreams(section('upstreams'), 'upstreams', ctx);
  const hosted = readHosted(section('hosted'), 'hosted', ctx);
  checkAliases(upstreams, hosted, ctx.problems);
  const fill = section('mirror') === undefined ? defaultFillSettings(ctx.runtime, ctx.store) : readMirror(section('mirror'), 'mirror', ctx);
  document.mirror = { upstreams: upstreams.map((u) => u.value), hosted, ...fill };
  if (section('gc') !== undefined) document.gc = readGc(section('gc'), 'gc', ctx);
  if (section('policies') !== undefined) document.policies = readPolicies(section('policies'), 'policies', ctx, document.mirror.upstreams);
  // `auth:` with nothing under it still turns authentication on (everything refused): the
  // section written is what an operator believes is enforced.
  if (Object.hasOwn(sections, 'auth')) document.auth = readAuth(section('auth') ?? {}, 'auth', ctx, document.mirror.upstreams);
  if (section('immutableTags') !== undefined) document.immutableTags = readImmutableTags(section('immutableTags'), 'immutableTags', ctx, document.mirror.upstreams);
  return document;
}
