// Intentions, Consul's model: a source may or may not call a destination (L4 `action`), or a
// list of L7 `permissions` decides per HTTP request. Names may be `*`.

export type IntentionAction = 'allow' | 'deny';
export type DefaultPolicy = 'allow' | 'deny';

export interface HeaderMatch {
  name: string;
  present?: boolean;
  exact?: string;
  prefix?: string;
  suffix?: string;
  regex?: string;
  invert?: boolean;
}

export interface HttpMatch {
  pathExact?: string;
  pathPrefix?: string;
  pathRegex?: string;
  /** Upper-case HTTP methods; empty or absent means any. */
  methods?: string[];
  header?: HeaderMatch[];
}

/** A claim a verified token must carry: the value at `path` (nested keys) is `value`, or a list holding it. */
export interface JwtClaimRequirement {
  path: string[];
  value: string;
}

/** A token from the `jwt-provider` config entry `name` that must verify, with these claims. */
export interface JwtProviderRequirement {
  name: string;
  verifyClaims?: JwtClaimRequirement[];
}

/**
 * Consul's intention `JWT`: every provider listed must find a valid token on the request, or
 * the intention (or permission) does not match it. HTTP only.
 */
export interface IntentionJwt {
  providers: JwtProviderRequirement[];
}

export interface IntentionPermission {
  action: IntentionAction;
  http: HttpMatch;
  /** Only with `action: allow`: the permission matches only requests with these tokens. */
  jwt?: IntentionJwt;
}

export interface Intention {
  /** Source service name or `*`. */
  source: string;
  /** Destination service name or `*`. */
  destination: string;
  /** L4 decision; absent when `permissions` is set. */
  action?: IntentionAction;
  /** L7 rules evaluated in order, first match wins; absent for L4 intentions. */
  permissions?: IntentionPermission[];
  /**
   * Tokens every request must carry for this intention to match it (HTTP destinations only;
   * not with `action: deny`).
   */
  jwt?: IntentionJwt;
  description?: string;
  /** Consul's precedence number (computed by lib/intentions, higher wins). */
  precedence?: number;
  createdAt?: string;
  updatedAt?: string;
}

/** What control serves on `intentions.get` and publishes on `intentions.changed`. */
export interface IntentionsSnapshot {
  revision: number;
  defaultPolicy: DefaultPolicy;
  /** When true, denials are logged and counted but not enforced. */
  auditMode: boolean;
  intentions: Intention[];
}
