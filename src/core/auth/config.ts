/**
 * What authentication and authorisation need to know, as core consumes it. The entry point
 * parses the configuration document's `auth:` and `immutableTags:` sections into these
 * (src/entry/config/auth.ts); secrets (passwords, token signing keys) are read from the
 * variables or Workers secrets the document names, never written in it.
 */

/** What a request does to a repository (the Docker token spec's actions). */
export type Action = 'pull' | 'push' | 'delete';
export const ACTIONS: readonly Action[] = ['pull', 'push', 'delete'];

/** A user's password as configured: a stored hash, or plaintext from a secret, hashed at start-up. */
export type PasswordSource = { hash: string } | { plaintext: string };

export interface UserConfig {
  name: string;
  password: PasswordSource;
}

/**
 * One authorisation rule: who (named users, any signed-in user, anonymous callers) may do
 * which actions on the repositories its globs match (src/core/glob.ts). Mirrored repositories
 * are matched by their qualified name (`docker.io/library/nginx`). Rules only grant: what
 * callers may do is the union of the rules that name them, and nothing else.
 */
export interface AccessRule {
  repositories: RegExp[];
  users: string[];
  /** Every authenticated user. */
  authenticated: boolean;
  /** Callers without credentials, and so everyone (signing in never takes a right away). */
  anonymous: boolean;
  actions: Action[];
}

/**
 * A key for the tokens Outpost issues: ES256 (P-256) or EdDSA (Ed25519), as PEM. The first key
 * with a private part signs; every listed key verifies tokens whose `kid` names it, so a key
 * being rotated out stays listed (public part only is enough) until its tokens expired.
 */
export interface TokenKeyConfig {
  kid: string;
  /** PKCS#8 PEM, from the variable or secret the document names. */
  privateKeyPem?: string;
  /** SPKI PEM; derived from the private key when that is given. */
  publicKeyPem?: string;
}

export interface AuthConfig {
  /**
   * The token endpoint's URL as clients must call it (the `realm` of challenges). Without it,
   * the request's own origin + TOKEN_PATH; set it when a proxy in front changes the origin.
   */
  realm?: string;
  /** The `service` of challenges and the `aud` of tokens. */
  service: string;
  /** The `iss` of tokens. */
  issuer: string;
  tokenTtlMs: number;
  refreshTokenTtlMs: number;
  /** Empty on Node means one key generated per process (tokens then hold only on that process). */
  keys: TokenKeyConfig[];
  users: UserConfig[];
  rules: AccessRule[];
  /** Failed logins one client address may make per window before it is answered 429. */
  loginFailures: { limit: number; windowMs: number };
  /** Cold mirror fills (upstream downloads) one anonymous client address may start per window. */
  anonymousFills: { limit: number; windowMs: number };
}

/** Tags that, once they name a manifest, are never moved or deleted (the document's `immutableTags:`). */
export interface ImmutableTagRule {
  repositories: RegExp[];
  /** Anchored; every tag when absent. */
  tags?: RegExp;
  /** Where the rule is written (`immutableTags[0]`), named in refusals. */
  label: string;
}

/** The path the token endpoint is served at (GET and POST). */
export const TOKEN_PATH = '/auth/token';
