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

export interface IntentionPermission {
  action: IntentionAction;
  http: HttpMatch;
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
