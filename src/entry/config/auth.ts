/**
 * The `auth:` section of the configuration document (who may pull, push and delete what, and
 * the tokens Outpost issues for it) and the top-level `immutableTags:` section (tags that, once
 * set, never move). src/core/auth/config.ts has the types and what each member means. Secrets
 * are named, never written: a user's `passwordEnv` and a token key's `privateKeyEnv` name the
 * variable (Node) or Workers secret that holds them. Only the syntax of keys is checked here;
 * they are imported (and their algorithm checked) asynchronously when the server starts.
 */
import { ACTIONS, type AccessRule, type Action, type AuthConfig, type ImmutableTagRule, type TokenKeyConfig, type UserConfig } from '../../core/auth/config.js';
import { MAX_PASSWORD_BYTES, NODE_MAX_ITERATIONS, parsePasswordHash, PasswordHashError, WORKERS_MAX_ITERATIONS } from '../../core/auth/passwords.js';
import type { UpstreamConfig } from '../../core/mirror/config.js';
import {
  anchoredRegExp,
  boolean,
  child,
  duration,
  field,
  httpUrl,
  integer,
  item,
  list,
  mapping,
  qualifiedGlobs,
  quote,
  required,
  string,
  stringList,
  variableKind,
  variableName,
  variableValue,
  type Mapping,
  Problems,
  type SectionContext,
} from './values.js';

const AUTH_KEYS = ['realm', 'service', 'issuer', 'tokenTtl', 'refreshTokenTtl', 'tokenKeys', 'users', 'rules', 'loginFailures', 'anonymousFills'] as const;
const USER_KEYS = ['name', 'passwordEnv', 'passwordHash'] as const;
const RULE_KEYS = ['repositories', 'users', 'authenticated', 'anonymous', 'actions'] as const;
const TOKEN_KEY_KEYS = ['kid', 'privateKeyEnv', 'publicKey', 'publicKeyEnv'] as const;
const LIMIT_KEYS = ['limit', 'window'] as const;
const IMMUTABLE_TAG_KEYS = ['repositories', 'tags'] as const;

const PASSWORD_REFUSED =
  'a password is never written in the configuration document; name the variable or secret that holds it with passwordEnv, or store a hash from outpost hash-password in passwordHash';
const PRIVATE_KEY_REFUSED =
  'a private key is never written in the configuration document; name the variable or secret that holds its PKCS#8 PEM with privateKeyEnv';

const DEFAULT_SERVICE = 'outpost';
/**
 * `service` and `issuer` are written inside a quoted challenge parameter (`service="..."`) and
 * compared in every token: printable ASCII without the quote and backslash of RFC 9110's
 * quoted-string, short enough for a header.
 */
const CHALLENGE_TEXT = /^[\x20\x21\x23-\x5b\x5d-\x7e]{1,200}$/;
const USER_NAME = /^[a-z0-9]+(?:[._-][a-z0-9]+)*$/;
const MAX_USER_NAME = 64;
/** The caller without credentials; a user of that name could not be told apart from it in rules and logs. */
const ANONYMOUS = 'anonymous';
/** A JWS `kid`, as written in token headers and logs. */
const KID = /^[A-Za-z0-9._-]{1,64}$/;
const PRIVATE_KEY_PEM = '-----BEGIN PRIVATE KEY-----';
const PUBLIC_KEY_PEM = '-----BEGIN PUBLIC KEY-----';

/** Rules are checked one by one per request: a few thousand are a configuration this was not designed for. */
const MAX_USERS = 1000;
const MAX_RULES = 1000;
const MAX_IMMUTABLE_TAG_RULES = 1000;
/** One signing key and the few being rotated out while their tokens expire. */
const MAX_TOKEN_KEYS = 16;

/** Shorter than 30s and a client's token can expire between its challenge and its request. */
const TOKEN_TTL = { min: 30_000, max: 24 * 3_600_000, fallback: 5 * 60_000 };
const REFRESH_TOKEN_TTL = { min: 60_000, max: 90 * 86_400_000, fallback: 7 * 86_400_000 };
const LOGIN_FAILURES = { limit: { min: 1, max: 1000, fallback: 10 }, window: { min: 1000, max: 3_600_000, fallback: 5 * 60_000 } };
/** A limit of 0: anonymous callers are served what is cached, and never start a download. */
const ANONYMOUS_FILLS = { limit: { min: 0, max: 100_000, fallback: 100 }, window: { min: 1000, max: 3_600_000, fallback: 60_000 } };

export function readAuth(value: unknown, path: string, ctx: SectionContext, upstreams: readonly UpstreamConfig[] = []): AuthConfig {
  const { problems } = ctx;
  const entries = mapping(value, path, problems, { known: AUTH_KEYS });
  // Not a mapping: that one problem, and the settings of nothing configured (everything refused).
  if (!entries) return readAuth({}, path, { ...ctx, problems: new Problems('') }, upstreams);
  const at = (key: string) => child(path, key);
  const realm = readRealm(field(entries, 'realm'), at('realm'), problems);
  const service = challengeText(field(entries, 'service'), at('service'), problems) ?? DEFAULT_SERVICE;
  const issuer = challengeText(field(entries, 'issuer'), at('issuer'), problems) ?? service;
  const users = readUsers(field(entries, 'users'), at('users'), ctx);
  return {
    ...(realm !== undefined ? { realm } : {}),
    service,
    issuer,
    tokenTtlMs: duration(field(entries, 'tokenTtl'), at('tokenTtl'), problems, TOKEN_TTL),
    refreshTokenTtlMs: duration(field(entries, 'refreshTokenTtl'), at('refreshTokenTtl'), problems, REFRESH_TOKEN_TTL),
    keys: readTokenKeys(field(entries, 'tokenKeys'), at('tokenKeys'), ctx),
    users: users.users,
    rules: readRules(field(entries, 'rules'), at('rules'), ctx, { names: users.named, path: at('users') }, upstreams),
    loginFailures: readLimit(field(entries, 'loginFailures'), at('loginFailures'), problems, LOGIN_FAILURES),
    anonymousFills: readLimit(field(entries, 'anonymousFills'), at('anonymousFills'), problems, ANONYMOUS_FILLS),
  };
}

export function readImmutableTags(value: unknown, path: string, ctx: SectionContext, upstreams: readonly UpstreamConfig[] = []): ImmutableTagRule[] {
  const rules: ImmutableTagRule[] = [];
  for (const { entries, at } of entriesOf(value, path, ctx.problems, MAX_IMMUTABLE_TAG_RULES, 'rules', IMMUTABLE_TAG_KEYS)) {
    if (field(entries, 'repositories') === undefined) ctx.problems.at(child(at, 'repositories'), 'is required: the repository globs whose tags never move');
    const repositories = qualifiedGlobs(field(entries, 'repositories'), child(at, 'repositories'), ctx.problems, upstreams);
    // Mirrored tags are the upstream's (core/registry/immutable-tags.ts): a glob that can only
    // name them would protect nothing.
    stringList(field(entries, 'repositories'), child(at, 'repositories'), new Problems('')).forEach(({ value: glob, path: globPath }) => {
      const upstream = upstreams.find((u) => glob.split('/')[0] === u.namespace);
      if (upstream) ctx.problems.at(globPath, `names repositories mirrored from upstream "${upstream.name}"; immutable tags apply to hosted repositories only (mirrored tags follow the upstream)`);
    });
    const tags = anchoredRegExp(field(entries, 'tags'), child(at, 'tags'), ctx.problems);
    rules.push({ repositories, ...(tags ? { tags } : {}), label: at });
  }
  return rules;
}

/** The mappings of a list of at most `max` of them, each with its key path. */
function entriesOf(value: unknown, path: string, problems: Problems, max: number, what: string, known: readonly string[], refused?: Record<string, string>) {
  const elements = list(value, path, problems);
  if (elements.length > max) problems.at(path, `holds at most ${max} ${what}, got ${elements.length}`);
  const out: { entries: Mapping; at: string }[] = [];
  elements.slice(0, max).forEach((element, i) => {
    const entries = mapping(element, item(path, i), problems, { known, ...(refused ? { refused } : {}) });
    if (entries) out.push({ entries, at: item(path, i) });
  });
  return out;
}

/** An absolute http(s) URL; a query or fragment would be lost when clients add theirs (`?service=...&scope=...`). */
function readRealm(value: unknown, path: string, problems: Problems): string | undefined {
  const raw = string(value, path, problems);
  if (raw === undefined) return undefined;
  const url = httpUrl(raw);
  if (!url || url.username !== '' || url.password !== '') {
    problems.at(path, `must be the absolute http(s) URL of the token endpoint as clients reach it, like https://registry.example.com/auth/token, got ${quote(raw)}`);
    return undefined;
  }
  if (url.search !== '' || url.hash !== '' || /[?#]/.test(raw)) {
    problems.at(path, `must have no query or fragment (clients add their own query), got ${quote(raw)}`);
    return undefined;
  }
  return url.href;
}

function challengeText(value: unknown, path: string, problems: Problems): string | undefined {
  const text = string(value, path, problems);
  if (text !== undefined && !CHALLENGE_TEXT.test(text)) {
    problems.at(path, `must be at most 200 printable ASCII characters without " or \\, got ${quote(text)}`);
    return undefined;
  }
  return text;
}

function readTokenKeys(value: unknown, path: string, ctx: SectionContext): TokenKeyConfig[] {
  const { problems } = ctx;
  const keys: TokenKeyConfig[] = [];
  const kids = new Set<string>();
  const parsed = entriesOf(value, path, problems, MAX_TOKEN_KEYS, 'keys', TOKEN_KEY_KEYS, { privateKey: PRIVATE_KEY_REFUSED });
  for (const { entries, at } of parsed) {
    const kid = required(field(entries, 'kid'), child(at, 'kid'), problems, 'the key id written in the tokens it signs');
    if (kid !== undefined && !KID.test(kid)) problems.at(child(at, 'kid'), `must be 1 to 64 letters, digits, ".", "_" or "-", got ${quote(kid)}`);
    else if (kid !== undefined && kids.has(kid)) problems.at(child(at, 'kid'), `${quote(kid)} is the kid of another key too`);
    else if (kid !== undefined) kids.add(kid);
    const given = (['privateKeyEnv', 'publicKey', 'publicKeyEnv'] as const).filter((key) => field(entries, key) !== undefined);
    if (given.length !== 1) {
      if (field(entries, 'privateKey') === undefined) {
        problems.at(at, 'needs exactly one of privateKeyEnv (the variable holding a PKCS#8 PEM: the key signs and verifies), publicKey (an SPKI PEM inline) and publicKeyEnv (the variable holding one): a public key only verifies');
      }
      continue;
    }
    const key = given[0]!;
    const keyPath = child(at, key);
    const pem =
      key === 'publicKey'
        ? string(field(entries, key), keyPath, problems)
        : fromVariable(field(entries, key), keyPath, ctx, key === 'privateKeyEnv' ? 'a PKCS#8 private key PEM' : 'an SPKI public key PEM');
    if (pem === undefined) continue;
    const marker = key === 'privateKeyEnv' ? PRIVATE_KEY_PEM : PUBLIC_KEY_PEM;
    if (!pem.includes(marker)) {
      // Never echo it: a private key put in the wrong variable is still a secret.
      const what = key === 'publicKey' ? 'is not' : `the ${variableKind(ctx)} ${String(field(entries, key))} does not hold`;
      const hint = key === 'privateKeyEnv' && pem.includes('-----BEGIN EC PRIVATE KEY-----') ? ' (an SEC1 key: convert it with openssl pkcs8 -topk8 -nocrypt)' : '';
      problems.at(keyPath, `${what} a PEM with ${marker}${hint}`);
      continue;
    }
    if (kid === undefined) continue;
    keys.push(key === 'privateKeyEnv' ? { kid, privateKeyPem: pem } : { kid, publicKeyPem: pem });
  }
  // Counted on what is written, so a key refused above is not reported twice.
  const signing = parsed.some(({ entries }) => field(entries, 'privateKeyEnv') !== undefined || field(entries, 'privateKey') !== undefined);
  if (!signing && parsed.length > 0) {
    problems.at(path, 'needs a key with privateKeyEnv: the first one signs the tokens Outpost issues, the others only verify');
  } else if (!signing && ctx.runtime === 'workers' && (value === undefined || (Array.isArray(value) && value.length === 0))) {
    problems.at(path, 'is required on Workers, with a key from privateKeyEnv: each isolate would otherwise sign with a key of its own, whose tokens the others refuse');
  }
  return keys;
}

function readUsers(value: unknown, path: string, ctx: SectionContext): { users: UserConfig[]; named: Set<string> } {
  const { problems } = ctx;
  const users: UserConfig[] = [];
  // Every name written, valid or not, so that a rule naming a refused user is not refused again.
  const named = new Set<string>();
  for (const { entries, at } of entriesOf(value, path, problems, MAX_USERS, 'users', USER_KEYS, { password: PASSWORD_REFUSED })) {
    const name = required(field(entries, 'name'), child(at, 'name'), problems, 'the user name clients sign in with');
    let valid = name !== undefined;
    if (name !== undefined && (!USER_NAME.test(name) || name.length > MAX_USER_NAME)) {
      problems.at(child(at, 'name'), `must be lower-case letters and digits separated by single ".", "_" or "-" (at most ${MAX_USER_NAME}), got ${quote(name)}`);
      valid = false;
    } else if (name === ANONYMOUS) {
      problems.at(child(at, 'name'), `${quote(ANONYMOUS)} is the caller without credentials; rules grant to it with anonymous: true`);
      valid = false;
    } else if (name !== undefined && named.has(name)) {
      problems.at(child(at, 'name'), `${quote(name)} names another user too`);
      valid = false;
    }
    if (name !== undefined) named.add(name);
    const password = readPassword(entries, at, ctx, name);
    if (valid && password !== undefined) users.push({ name: name!, password });
  }
  return { users, named };
}

function readPassword(entries: Mapping, path: string, ctx: SectionContext, name: string | undefined): UserConfig['password'] | undefined {
  const { problems } = ctx;
  const fromEnv = field(entries, 'passwordEnv');
  const hash = field(entries, 'passwordHash');
  if ((fromEnv === undefined) === (hash === undefined)) {
    if (field(entries, 'password') === undefined) {
      problems.at(path, 'needs exactly one of passwordEnv (the variable or secret holding the password, hashed at start) and passwordHash (from outpost hash-password)');
    }
    return undefined;
  }
  if (fromEnv !== undefined) {
    const at = child(path, 'passwordEnv');
    const plaintext = fromVariable(fromEnv, at, ctx, name === undefined ? 'a password' : `the password of ${quote(name)}`);
    if (plaintext === undefined) return undefined;
    if (plaintext.includes('\0')) {
      problems.at(at, `the ${variableKind(ctx)} ${String(fromEnv)} holds a NUL character, which no login can send`);
      return undefined;
    }
    if (new TextEncoder().encode(plaintext).byteLength > MAX_PASSWORD_BYTES) {
      problems.at(at, `the ${variableKind(ctx)} ${String(fromEnv)} holds more than ${MAX_PASSWORD_BYTES} bytes, the longest password Outpost checks`);
      return undefined;
    }
    return { plaintext };
  }
  const at = child(path, 'passwordHash');
  const text = string(hash, at, problems);
  if (text === undefined) return undefined;
  try {
    parsePasswordHash(text, ctx.runtime === 'workers' ? WORKERS_MAX_ITERATIONS : NODE_MAX_ITERATIONS);
  } catch (err) {
    if (!(err instanceof PasswordHashError)) throw err;
    problems.at(at, err.message);
    return undefined;
  }
  return { hash: text };
}

/** `users`: every user name written under `auth.users` (at `path`), valid or not. */
function readRules(value: unknown, path: string, ctx: SectionContext, users: { names: ReadonlySet<string>; path: string }, upstreams: readonly UpstreamConfig[]): AccessRule[] {
  const { problems } = ctx;
  const rules: AccessRule[] = [];
  for (const { entries, at } of entriesOf(value, path, problems, MAX_RULES, 'rules', RULE_KEYS)) {
    if (field(entries, 'repositories') === undefined) problems.at(child(at, 'repositories'), 'is required: the repository globs the rule grants actions on');
    const repositories = qualifiedGlobs(field(entries, 'repositories'), child(at, 'repositories'), problems, upstreams);
    const named = stringList(field(entries, 'users'), child(at, 'users'), problems);
    for (const user of named) {
      if (users.names.has(user.value)) continue;
      if (user.value === ANONYMOUS) problems.at(user.path, `${quote(ANONYMOUS)} is not a user; for callers without credentials write anonymous: true`);
      else problems.at(user.path, `${quote(user.value)} is not a user of ${users.path}`);
    }
    const authenticated = boolean(field(entries, 'authenticated'), child(at, 'authenticated'), problems, false);
    const anonymous = boolean(field(entries, 'anonymous'), child(at, 'anonymous'), problems, false);
    // What is written counts, so that a user or flag refused above does not make the rule refused again.
    const rawUsers = field(entries, 'users');
    const grants = (key: string) => field(entries, key) !== undefined && field(entries, key) !== false;
    if (!(rawUsers !== undefined && !(Array.isArray(rawUsers) && rawUsers.length === 0)) && !grants('authenticated') && !grants('anonymous')) {
      problems.at(at, 'grants nobody: name users, or set authenticated (every signed-in user) or anonymous (callers without credentials) to true');
    }
    const actions = readActions(field(entries, 'actions'), child(at, 'actions'), problems);
    rules.push({ repositories, users: [...new Set(named.map((u) => u.value))], authenticated, anonymous, actions });
  }
  return rules;
}

function readActions(value: unknown, path: string, problems: Problems): Action[] {
  if (value === undefined) {
    problems.at(path, `is required: which of ${ACTIONS.join(', ')} the rule grants`);
    return [];
  }
  const actions = new Set<Action>();
  const written = stringList(value, path, problems);
  if (Array.isArray(value) && value.length === 0) problems.at(path, `must list at least one of ${ACTIONS.join(', ')}`);
  for (const { value: name, path: at } of written) {
    const action = ACTIONS.find((a) => a === name);
    if (action) actions.add(action);
    else problems.at(at, `must be one of ${ACTIONS.join(', ')}, got ${quote(name)}`);
  }
  return [...actions];
}

interface LimitRanges {
  limit: { min: number; max: number; fallback: number };
  window: { min: number; max: number; fallback: number };
}

function readLimit(value: unknown, path: string, problems: Problems, ranges: LimitRanges): { limit: number; windowMs: number } {
  const entries = value === undefined || value === null ? {} : (mapping(value, path, problems, { known: LIMIT_KEYS }) ?? {});
  return {
    limit: integer(field(entries, 'limit'), child(path, 'limit'), problems, ranges.limit),
    windowMs: duration(field(entries, 'window'), child(path, 'window'), problems, ranges.window),
  };
}

/** A variable named at `path` and what it holds. */
function fromVariable(value: unknown, path: string, ctx: SectionContext, holds: string): string | undefined {
  const name = variableName(value, path, ctx);
  return name === undefined ? undefined : variableValue(name, path, ctx, holds);
}
