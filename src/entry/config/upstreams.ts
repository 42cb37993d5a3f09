/**
 * The sections of the configuration document that route repository names: `upstreams:` (the
 * registries mirrored, each under an alias) and `hosted:` (prefixes kept here even when a
 * default upstream takes every other bare name). Secrets are named, never written: an
 * upstream's `passwordEnv` names the environment variable (Node) or Workers secret that
 * holds its password, and it is resolved here from the env readConfig was given.
 */
import {
  canonicalNamespace,
  DEFAULT_MAX_STALE_MS,
  DEFAULT_TAG_TTL_MS,
  type ContentRules,
  type UpstreamConfig,
} from '../../core/mirror/config.js';
import { isValidName } from '../../core/oci/reference.js';
import {
  anchoredRegExp,
  boolean,
  child,
  duration,
  field,
  globs,
  httpUrl,
  item,
  list,
  mapping,
  quote,
  required,
  string,
  stringList,
  type Problems,
  type SectionContext,
  variableName,
  variableValue,
} from './values.js';

const UPSTREAM_KEYS = ['name', 'url', 'namespace', 'default', 'tagTtl', 'maxStale', 'username', 'passwordEnv', 'content'] as const;
const CONTENT_KEYS = ['allow', 'deny', 'tags'] as const;

/** An alias is one path component, so `/v2/<alias>/<repository>` splits unambiguously. */
const ALIAS = /^[a-z0-9]+(?:[._-][a-z0-9]+)*$/;
/** A registry host as containerd sends it in ?ns=: lower-case name or IP, optional port. */
const NAMESPACE = /^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*|\[[0-9a-f:.]+\])(?::\d{1,5})?$/;
/** DNS caps a host name at 253 characters; add ":" and a port. */
const MAX_NAMESPACE_LENGTH = 253 + 6;

/** A cached tag is trusted at most a week before it is revalidated. */
const MAX_TAG_TTL_MS = 7 * 86_400_000;
/** A tag is served past its TTL, while the upstream fails, for at most 30 days. */
const MAX_MAX_STALE_MS = 30 * 86_400_000;

/** A parsed value with the key path it came from, for messages about several of them. */
export interface Located<T> {
  value: T;
  path: string;
}

export function readUpstreams(value: unknown, path: string, ctx: SectionContext): Located<UpstreamConfig>[] {
  const upstreams: Located<UpstreamConfig>[] = [];
  list(value, path, ctx.problems).forEach((element, i) => {
    const upstream = readUpstream(element, item(path, i), ctx);
    if (upstream) upstreams.push({ value: upstream, path: item(path, i) });
  });
  checkUnique(upstreams, ctx.problems);
  return upstreams;
}

function readUpstream(value: unknown, path: string, ctx: SectionContext): UpstreamConfig | undefined {
  const { problems } = ctx;
  const entries = mapping(value, path, problems, {
    known: UPSTREAM_KEYS,
    refused: { password: 'a password is never written in the configuration document; name the variable or secret that holds it with passwordEnv' },
  });
  if (!entries) return undefined;
  const at = (key: string) => child(path, key);

  const name = required(field(entries, 'name'), at('name'), problems, 'the alias: /v2/<name>/<repository> reaches this upstream');
  if (name !== undefined && !ALIAS.test(name)) {
    problems.at(at('name'), `must be lower-case letters and digits, separated by single ".", "_" or "-" (one path component), got ${quote(name)}`);
  }
  const url = upstreamUrl(required(field(entries, 'url'), at('url'), problems, 'the registry base URL, like https://registry-1.docker.io'), at('url'), problems);
  let namespace = string(field(entries, 'namespace'), at('namespace'), problems);
  if (namespace !== undefined && (namespace.length > MAX_NAMESPACE_LENGTH || !NAMESPACE.test(namespace))) {
    problems.at(at('namespace'), `must be a lower-case registry host with an optional port, like docker.io or registry.example.com:5000, got ${quote(namespace)}`);
    namespace = undefined;
  }
  namespace ??= url === undefined ? undefined : new URL(url).host;
  const isDefault = boolean(field(entries, 'default'), at('default'), problems, false);
  const tagTtlMs = duration(field(entries, 'tagTtl'), at('tagTtl'), problems, { min: 0, max: MAX_TAG_TTL_MS, fallback: DEFAULT_TAG_TTL_MS });
  const maxStaleMs = duration(field(entries, 'maxStale'), at('maxStale'), problems, { min: 0, max: MAX_MAX_STALE_MS, fallback: DEFAULT_MAX_STALE_MS });
  const credentials = readCredentials(entries, path, ctx);
  const content = readContent(field(entries, 'content'), at('content'), problems);
  if (name === undefined || url === undefined || namespace === undefined || !ALIAS.test(name)) return undefined;
  return {
    name,
    url,
    namespace: canonicalNamespace(namespace),
    default: isDefault,
    tagTtlMs,
    maxStaleMs,
    ...(credentials ? { credentials } : {}),
    content,
  };
}

/** http(s) with a host and nothing after it: routes append /v2/..., so a path would be lost or doubled. */
function upstreamUrl(raw: string | undefined, path: string, problems: Problems): string | undefined {
  if (raw === undefined) return undefined;
  const url = httpUrl(raw);
  if (!url) {
    problems.at(path, `must be an http(s) URL like https://registry-1.docker.io, got ${quote(raw)}`);
    return undefined;
  }
  if (url.username !== '' || url.password !== '') {
    problems.at(path, 'must not hold credentials; use username and passwordEnv');
    return undefined;
  }
  if (url.pathname !== '/' || url.search !== '' || url.hash !== '' || /[?#]/.test(raw)) {
    problems.at(path, `must be the registry's base URL without a path or query (Outpost adds /v2/...), got ${quote(raw)}`);
    return undefined;
  }
  return url.origin;
}

function readCredentials(entries: Record<string, unknown>, path: string, ctx: SectionContext): UpstreamConfig['credentials'] {
  const { problems } = ctx;
  const username = string(field(entries, 'username'), child(path, 'username'), problems);
  const at = child(path, 'passwordEnv');
  const variable = variableName(field(entries, 'passwordEnv'), at, ctx);
  if (username !== undefined && field(entries, 'passwordEnv') === undefined) {
    problems.at(at, 'is required with username (the name of the variable or secret that holds the password)');
  }
  if (variable === undefined) return undefined;
  if (username === undefined) {
    if (field(entries, 'username') === undefined) problems.at(child(path, 'username'), 'is required with passwordEnv');
    return undefined;
  }
  const password = variableValue(variable, at, ctx, `the password of ${quote(username)}`);
  return password === undefined ? undefined : { username, password };
}

function readContent(value: unknown, path: string, problems: Problems): ContentRules {
  if (value === undefined) return { allow: [], deny: [] };
  const entries = mapping(value, path, problems, { known: CONTENT_KEYS });
  if (!entries) return { allow: [], deny: [] };
  const tags = anchoredRegExp(field(entries, 'tags'), child(path, 'tags'), problems);
  return {
    allow: globs(field(entries, 'allow'), child(path, 'allow'), problems),
    deny: globs(field(entries, 'deny'), child(path, 'deny'), problems),
    ...(tags ? { tags } : {}),
  };
}

/** Aliases and namespaces route requests, so each must name one upstream; at most one takes bare names. */
function checkUnique(located: Located<UpstreamConfig>[], problems: Problems): void {
  const byName = new Map<string, Located<UpstreamConfig>>();
  const byNamespace = new Map<string, Located<UpstreamConfig>>();
  let byDefault: Located<UpstreamConfig> | undefined;
  for (const entry of located) {
    const upstream = entry.value;
    const at = (key: string) => child(entry.path, key);
    const other = (u: Located<UpstreamConfig>) => `${u.path} (${u.value.name})`;
    const sameName = byName.get(upstream.name);
    if (sameName) problems.at(at('name'), `${quote(upstream.name)} is already the name of ${other(sameName)}`);
    else byName.set(upstream.name, entry);
    const sameNamespace = byNamespace.get(upstream.namespace);
    if (sameNamespace) {
      problems.at(at('namespace'), `${quote(upstream.namespace)} is already the namespace of ${other(sameNamespace)} (set namespace to tell them apart)`);
    } else byNamespace.set(upstream.namespace, entry);
    if (upstream.default && byDefault) problems.at(at('default'), `only one upstream may be the default; ${other(byDefault)} already is`);
    else if (upstream.default) byDefault = entry;
  }
}

/**
 * Hosted prefixes: whole path components followed by "/" (`team/`, `org/internal/`), so that
 * `team/` never takes `teamcity/...`.
 */
export function readHosted(value: unknown, path: string, ctx: SectionContext): string[] {
  const hosted: string[] = [];
  for (const prefix of stringList(value, path, ctx.problems)) {
    if (!prefix.value.endsWith('/') || !isValidName(prefix.value.slice(0, -1))) {
      ctx.problems.at(
        prefix.path,
        `must be a repository name prefix of whole components ending in "/", like team/ or org/internal/, got ${quote(prefix.value)}`,
      );
      continue;
    }
    if (hosted.includes(prefix.value)) ctx.problems.at(prefix.path, `${quote(prefix.value)} is listed twice`);
    else hosted.push(prefix.value);
  }
  return hosted;
}

/**
 * `/v2/<alias>/...` goes to an upstream, so an alias that is also a hosted prefix's first
 * component would make `team/app` both hosted and mirrored.
 */
export function checkAliases(upstreams: Located<UpstreamConfig>[], hosted: string[], problems: Problems): void {
  for (const { value: upstream, path } of upstreams) {
    const prefix = hosted.find((p) => p.split('/')[0] === upstream.name);
    if (prefix !== undefined) {
      problems.at(
        child(path, 'name'),
        `${quote(upstream.name)} is also the first component of the hosted prefix ${quote(prefix)}; rename the upstream or the prefix`,
      );
    }
  }
}
