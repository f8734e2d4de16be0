import type { ErrorSpec } from './types.ts';

/** Error codes of the control area. Append only; never rename or reuse a code. */
export const CONTROL_ERRORS = {
  REMORA_E_CONTROL_TOKEN_INVALID: {
    meaning:
      'A node token is malformed, was not issued by this control plane (HMAC mismatch), or belongs to another node.',
    remedy:
      'Create a token for this node with `remora token create <node> <service-globs...>` and put it in the agent config (`nodeToken`).',
  },
  REMORA_E_CONTROL_TOKEN_EXPIRED: {
    meaning: 'A node token is past its expiry time.',
    remedy: 'Create a fresh token with `remora token create <node> <service-globs...> --ttl <h>`.',
  },
  REMORA_E_CONTROL_SERVICE_NOT_ALLOWED: {
    meaning: "The requested service matches none of the node token's service globs.",
    remedy:
      'Create a token whose globs cover the service (`remora token create <node> <service>`), or request a certificate only for services the node runs.',
  },
  REMORA_E_CONTROL_CSR_SAN_MISMATCH: {
    meaning:
      'The CSR does not hold exactly one SAN equal to the requested SPIFFE ID (extra, missing or wrong SANs).',
    remedy:
      'Generate the CSR with the agent: one URI SAN spiffe://<trust-domain>/ns/default/dc/<dc>/svc/<service>, nothing else; the trust domain comes from `remora ca roots`.',
  },
  REMORA_E_CONTROL_CSR_WEAK_KEY: {
    meaning: 'The CSR key is not RSA or is shorter than 2048 bits.',
    remedy: 'Generate an RSA key of at least 2048 bits (the agent does this by default).',
  },
  REMORA_E_CONTROL_SERVICE_NOT_ON_NODE: {
    meaning:
      'Consul lists no instance of the service whose Meta["remora-node"] is the requesting node.',
    remedy:
      'Register the service on this node with the agent (it sets Meta remora-node) and wait for the registration to reach the catalog, then retry.',
  },
  REMORA_E_CONTROL_OPERATOR_UNAUTHORIZED: {
    meaning:
      'An operator request (intentions, tokens, CA rotation) carries no or a wrong operator token, or control has none configured.',
    remedy:
      'Set the same operator token in control (`REMORA_CONTROL_OPERATOR_TOKEN`) and in the CLI (`REMORA_CLI_OPERATOR_TOKEN`).',
  },
  REMORA_E_CONTROL_CONSUL_UNAVAILABLE: {
    meaning: 'Control could not read or write Consul (KV or catalog), so it refused the request.',
    remedy:
      'Check `consul.address`/`consul.token` and that Consul is up; the request is safe to retry.',
  },
  REMORA_E_CONTROL_KV_CONFLICT: {
    meaning: 'A check-and-set write to Consul KV kept losing to concurrent writers.',
    remedy: 'Retry the request; if it persists, look for a process rewriting the remora/ prefix.',
  },
  REMORA_E_CONTROL_STATE_CORRUPT: {
    meaning: 'Control-plane state in Consul KV (CA, intentions, token secret) cannot be parsed.',
    remedy:
      'Restore the named key under the KV prefix from backup, or delete it to let control recreate it (deleting the CA key makes every certificate untrusted).',
  },
  REMORA_E_CONTROL_NOT_READY: {
    meaning: 'Control received a request before it finished loading its CA and state.',
    remedy: 'Retry in a moment; check the control log for Consul errors if it persists.',
  },
  REMORA_E_CONTROL_INTENTION_NOT_FOUND: {
    meaning: 'No intention exists for the given source and destination.',
    remedy: 'List the existing intentions with `remora intention list`.',
  },
  REMORA_E_CONTROL_CSR_DNS_SAN_NOT_ALLOWED: {
    meaning:
      "A CSR asks for DNS SANs control does not grant: only an ingress gateway (Consul lists the service with Kind ingress-gateway on the requesting node) gets DNS names, only while its ingress-gateway entry enables TLS, and only the names derived from that entry (`*.ingress.<domain>`, `*.ingress.<dc>.<domain>` for Consul's DNS domains, and its services' `Hosts`).",
    remedy:
      'Let the agent make the CSR (it asks for exactly the names of the entry); check that the entry names the host (`consul config read -kind ingress-gateway -name <gateway>`) and that control and the agent agree on `consul.dnsDomains`.',
  },
  REMORA_E_CONTROL_GATEWAY_SERVICE_NOT_LINKED: {
    meaning:
      'A terminating gateway asked for a certificate of a service its `terminating-gateway` config entry does not link (by name, or by `*` for a service the catalog lists), or the requesting service instance is not a terminating gateway on that node.',
    remedy:
      'Link the service in the gateway\'s entry (`consul config write`, docs/gateways.md "Terminating gateways"); the gateway obtains the certificate once the entry names it.',
  },
} as const satisfies Record<string, ErrorSpec>;
