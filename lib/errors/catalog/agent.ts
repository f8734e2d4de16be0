import type { ErrorSpec } from './types.ts';

/** Error codes of the agent area. Append only; never rename or reuse a code. */
export const AGENT_ERRORS = {
  REMORA_E_AGENT_DEFINITION_UNREADABLE: {
    meaning:
      'A service definition file cannot be read or is not valid JSON; its services are skipped.',
    remedy:
      'Fix the file named in the message (permissions, JSON syntax); the agent reloads it on its own when it changes, or on SIGHUP. Services it defined before keep running.',
  },
  REMORA_E_AGENT_DEFINITION_INVALID: {
    meaning:
      'A service definition names a field with a missing, wrong-typed or out-of-range value; that service is skipped.',
    remedy:
      'Fix the field named in the message (see docs/agent.md for the accepted format); other services in the directory are not affected.',
  },
  REMORA_E_AGENT_DEFINITION_NOT_APPLIED: {
    meaning:
      'A service definition asks for something Remora accepts but does not do, or cannot do for one part of it (with `proxy.expose.checks`, or `Expose.Checks` of service-defaults or proxy-defaults: an HTTPS check, a gRPC check over TLS, or no free port left in `exposePortMin`–`exposePortMax`). The service is registered and served without it; such a check keeps probing the app directly.',
    remedy:
      "Do it the way the message says (for a check: serve it in plain HTTP or h2c, list its path under `proxy.expose.paths` with a listener_port of your choosing, or widen the agent's `exposePortMin`–`exposePortMax`), or remove the field to silence the report.",
  },
  REMORA_E_AGENT_DEFINITION_DUPLICATE: {
    meaning:
      "Two definitions use the same service instance ID, or the same port on the host (an upstream `local_bind_port`, a sidecar `port`, an exposed path's `listener_port`); the later one is skipped.",
    remedy:
      'Give each instance a unique `id`, and each upstream, sidecar and exposed path its own port on the host.',
  },
  REMORA_E_AGENT_DATA_DIR: {
    meaning:
      'The agent cannot create or write its data directory (keys, certificates, socket, pid files).',
    remedy:
      'Create the directory named in the message, owned by the agent user with mode 0700, or point `dataDir` elsewhere.',
  },
  REMORA_E_AGENT_ALREADY_RUNNING: {
    meaning: 'Another agent already serves the Unix socket in this data directory.',
    remedy: 'Stop the other agent first, or give this one its own `dataDir`.',
  },
  REMORA_E_AGENT_SIGN_FAILED: {
    meaning:
      'A certificate request for a service instance failed (NATS or control unreachable, or refused); the agent retries with backoff and the current certificate stays in use until it expires.',
    remedy:
      'Check that NATS and `remora control` are reachable and that the node token allows the service (`remora token create --node <node> --services <glob>`).',
  },
  REMORA_E_AGENT_CERT_EXPIRED: {
    meaning:
      "An instance's certificate expired before it could be renewed; its proxy cannot make or accept mTLS connections.",
    remedy: 'Restore the path to `remora control` over NATS; the agent renews as soon as it can.',
  },
  REMORA_E_AGENT_CONTROL_UNAVAILABLE: {
    meaning:
      'The trust bundle or the intentions cannot be fetched from control over NATS; the agent keeps the last known ones and retries.',
    remedy: 'Check the NATS servers in `nats.servers` and that `remora control` is running.',
  },
  REMORA_E_AGENT_CONSUL_UNAVAILABLE: {
    meaning:
      'The local Consul agent refused or did not answer a registration, deregistration or check update; the agent retries with backoff.',
    remedy:
      'Check that Consul answers at `consul.address` and that the ACL token may register services.',
  },
  REMORA_E_AGENT_PROXY_SPAWN_FAILED: {
    meaning:
      'The agent could not start a `remora proxy` process for an instance; it retries with backoff.',
    remedy: 'Check `proxyCommand` and the proxy log under `<dataDir>/instances/<id>/proxy.log`.',
  },
  REMORA_E_AGENT_PROXY_EXITED: {
    meaning: 'A proxy process exited or stopped answering; the agent restarts it with backoff.',
    remedy: 'Read the proxy log under `<dataDir>/instances/<id>/proxy.log` for the reason.',
  },
  REMORA_E_AGENT_PROXY_REJECTED: {
    meaning: 'A proxy refused a config snapshot and keeps serving its previous one.',
    remedy: "The message carries the proxy's reason; fix the definition it points to.",
  },
  REMORA_E_AGENT_PROXY_HANDOVER_FAILED: {
    meaning:
      "`remora restart-proxies` could not hand an instance's traffic to a new proxy: the instance has no running and ready proxy, a restart of it is under way, or the new proxy did not start, bind the running one's ports or become ready in time. The running proxy keeps serving; nothing was dropped.",
    remedy:
      'The message names the step; read `<dataDir>/instances/<id>/proxy.log`. A proxy started by a Remora that did not share its ports cannot be taken over: stop and start its instance (remove and restore its definition) once.',
  },
  REMORA_E_AGENT_PROXY_LOG_ROTATION: {
    meaning:
      "The agent cannot rotate a proxy's `proxy.log` past `proxyLogMaxBytes` (a full disk, no permission in the instance directory); the proxy keeps writing to it, unbounded, and the agent tries again at its next check.",
    remedy:
      'Free disk space in the data directory, and let the agent user write in `<dataDir>/instances/<id>/`; or raise `proxyLogMaxBytes`.',
  },
  REMORA_E_AGENT_ADMIN_UNREACHABLE: {
    meaning:
      "`remora status` or `remora restart-proxies` cannot reach the agent's loopback admin endpoint, or it answered with an error (the message carries the agent's reason).",
    remedy:
      'Check that `remora agent` runs on this host and that `agentAdmin` (or `--agent-admin`) matches its `adminPort`.',
  },
  REMORA_E_AGENT_DRAIN_TIMEOUT: {
    meaning: 'A proxy did not finish draining within `drainTimeoutMs`; it was stopped anyway.',
    remedy: 'Raise `drainTimeoutMs` if requests legitimately take longer.',
  },
  REMORA_E_AGENT_ADMIN_PORT_IN_USE: {
    meaning:
      'The agent cannot listen on its loopback status port; it runs on without a status endpoint.',
    remedy:
      'Set `adminPort` to a free port (0 picks one) and point `remora status --agent-admin` at it.',
  },
  REMORA_E_AGENT_TRANSPARENT_PRIVILEGE: {
    meaning:
      'The agent may not change the firewall rules that transparent interception needs (no CAP_NET_ADMIN); the instance keeps running with its explicit upstream listeners only.',
    remedy:
      'Grant the agent CAP_NET_ADMIN: the systemd drop-in systemd/remora-agent.service.d/transparent.conf, or `cap_add: [NET_ADMIN]` in compose; or remove `transparent` from the definition (docs/transparent.md).',
  },
  REMORA_E_AGENT_TRANSPARENT_UNAVAILABLE: {
    meaning:
      'The `iptables` command is not installed, so transparent interception cannot be set up; the instance keeps running with its explicit upstream listeners only.',
    remedy:
      'Install iptables (`apt-get install -y iptables`; 1.8 with the nf_tables backend works) or remove `transparent` from the definition.',
  },
  REMORA_E_AGENT_TRANSPARENT_RULES: {
    meaning:
      "iptables refused the interception rules of a transparent instance (its nat redirects, or the filter chain of the mesh entry's `MeshDestinationsOnly`) for a reason other than privilege; the instance keeps running with what was installed before the failed step, and its explicit upstream listeners.",
    remedy:
      'Read the iptables message in the error, compare with `iptables -t nat -S` and `iptables -S` (chains REMORA-…) and docs/transparent.md; the agent retries on the next change.',
  },
  REMORA_E_AGENT_DERIVED_LIMIT: {
    meaning:
      "A transparent instance's intentions allow more mesh services than `transparentDerivedMax`: the agent intercepts the first ones (by name) and calls to the others pass around the proxy. Each derived service holds one blocking query, so one connection, to the Consul agent, whose `limits.http_max_conns_per_client` defaults to 200.",
    remedy:
      "Prefer a default-deny policy with intentions for what each service calls; or list the upstreams and set `proxy.config.derive_upstreams: false`; or raise `transparentDerivedMax` together with Consul's `limits.http_max_conns_per_client` (docs/transparent.md).",
  },
  REMORA_E_AGENT_METRICS_PORT_TAKEN: {
    meaning:
      "An instance's `envoy_prometheus_bind_addr` (from its definition's proxy config or from proxy-defaults' `Config`) names a port this host's sidecars already use, or one an instance with an earlier ID asks for too (a proxy-defaults setting on a host running several instances): its proxy serves `/metrics` on its loopback admin API only. Its traffic is not affected.",
    remedy:
      "Give each instance of the host its own port: set `envoy_prometheus_bind_addr` in each definition's `connect.sidecar_service.proxy.config` (it wins over proxy-defaults'), away from sidecar ports, upstream listeners and exposed paths (docs/agent.md).",
  },
  REMORA_E_AGENT_TRANSPARENT_HOST_CONFINED: {
    meaning:
      "The mesh entry sets `TransparentProxy.MeshDestinationsOnly` and a transparent instance has no `proxy.config.app_user`: its rules hold every user of the host but the proxies', so every other process (a Consul agent, package updates, monitoring) can open TCP connections only to loopback, DNS and mesh services. The rules are installed as asked.",
    remedy:
      'Set `proxy.config.app_user` to the user the app runs as, so only the app is confined; without it, run the app alone in its own network namespace (a container) where confining everything is meant (docs/transparent.md).',
  },
  REMORA_E_AGENT_TRANSPARENT_SHARED: {
    meaning:
      "Several transparent instances of one agent share its network namespace, and not each has its own `proxy.config.app_user`: the rules match by destination, so a call to a service more than one of them reaches is carried by whichever instance's chain comes first, with that instance's identity, and intentions judge that identity.",
    remedy:
      'Set `proxy.config.app_user` on each transparent instance to the user its app runs as (each app its own user), or give each transparent instance its own network namespace (docs/transparent.md).',
  },
  REMORA_E_AGENT_CENTRAL_CONFIG_INVALID: {
    meaning:
      "A Consul configuration entry holds a value Remora cannot use: a protocol it does not know (service-defaults `Protocol`, or proxy-defaults `Config.protocol`), a bad upstream setting in service-defaults `UpstreamConfig`, an inbound setting that is no whole number in range (service-defaults `LocalConnectTimeoutMs`, `LocalRequestTimeoutMs`, `MaxInboundConnections`), an access log setting Remora cannot apply (proxy-defaults `AccessLogs` with an unknown `Type`, a `file` without an absolute `Path`, or a `JSONFormat`/`TextFormat` the proxies cannot apply: an unknown operator, a `JSONFormat` that is not a JSON object, both set), a service-resolver field Remora does not implement (a policy other than round_robin or least_request, hash policies, a redirect or failover target in another datacenter, peer, namespace or partition), a timeout that is not a duration, a subset whose name or filter is bad, a redirect chain that loops, a router or splitter part Remora cannot apply (a route with a bad match, a subset the service's resolver does not define, routes or splits on a tcp upstream), a `mesh` entry's `TransparentProxy.MeshDestinationsOnly` or `AllowEnablingPermissiveMutualTLS` that is not a boolean (read as false), a service-defaults or proxy-defaults `MutualTLSMode` other than strict or permissive (ignored: the next source decides, else strict), a bad value in a service-defaults or proxy-defaults `Expose` (a `Checks` that is not a boolean, read as false; a path that is not an object, a `Path` not starting with `/`, a port outside 1–65535, a `Protocol` other than http or http2, a `ListenerPort` repeated in the entry or already a listener of the instance or of another instance on the host: that path is not exposed, the entry's other paths are), or a `jwt-provider` entry Remora cannot apply (no or both key sets, a JWKS that is not base64 of a JSON Web Key Set or holds a key that cannot verify tokens, a remote `URI` that is not http(s), a bad location, forwarding header, duration or number; the whole provider is left out, and intentions requiring it deny with 401). The agent ignores that value (or that `Defaults`/`Overrides` item, route or subset): the protocol falls back to the next source (proxy-defaults, then `tcp`), upstream and inbound settings to the definition's and Remora's defaults, and calls go to every healthy instance of the service with the callers' own policy and timeouts (a redirect that cannot apply leaves calls with the service it names; a failover target that cannot apply is left out of the list).",
    remedy:
      'Fix the entry the message names (`consul config write`): a protocol is one of tcp, http, http2 or grpc, and upstream settings follow docs/agent.md ("Upstream settings from service-defaults"), a service-resolver may set ConnectTimeout, RequestTimeout, LoadBalancer.Policy (round_robin, least_request), Subsets (DNS-label names, filters in Consul\'s filter language) and a DefaultSubset among them, a Redirect or a Failover (not both) to services and subsets of this datacenter, routes and splits name subsets their service\'s resolver defines (docs/agent.md, "Routes and traffic splits", "Subsets" and "Redirect and failover"), an access log format uses the operators docs/proxy.md lists ("Formats"), the mesh entry\'s `TransparentProxy.MeshDestinationsOnly` is true or false (docs/transparent.md, "Mesh destinations only"), an `Expose` path is absolute with ports in range and a `ListenerPort` of its own on the host (docs/agent.md, "From service-defaults and proxy-defaults"), and a jwt-provider entry follows docs/agent.md ("JWT providers"). Values in the service definition win over service-defaults and proxy-defaults; a service-resolver wins over the definition.',
  },
  REMORA_E_AGENT_INGRESS_NOT_APPLIED: {
    meaning:
      "A part of an ingress gateway's `ingress-gateway` entry cannot be applied by the agent that runs the gateway: the entry is missing or malformed (the gateway then has no listener), a listener repeats a port or has a protocol Remora does not serve, a service's protocol differs from its listener's, a `tcp` listener has other than one service or a `*` service, hosts are set on a `tcp` listener or with `*`, a host is not a DNS name (with at most a leading `*.` or trailing `.*` wildcard) or is taken by two services of one listener, or a TLS listener's `TLSMinVersion` is below TLS 1.2 (it is raised to TLSv1_2). The listener or service named is left out; the rest of the gateway keeps serving.",
    remedy:
      'Fix the entry the message names (`consul config write`), following docs/gateways.md; `remora status` lists the problems until the entry is fixed.',
  },
  REMORA_E_AGENT_CAPABILITY_INHERITED: {
    meaning:
      'The agent holds CAP_NET_ADMIN (for transparent interception) but cannot start its proxies without it, because `setpriv` is not installed: every proxy inherits the capability.',
    remedy:
      'Install util-linux, which provides `setpriv` (`apt-get install -y util-linux`), and restart the agent; or remove the CAP_NET_ADMIN grant if no instance uses `transparent`.',
  },
  REMORA_E_AGENT_JWKS_UNAVAILABLE: {
    meaning:
      "The key set of a `jwt-provider` entry cannot be had: its `JSONWebKeySet.Local.Filename` cannot be read or holds no usable JSON Web Key Set, or its `JSONWebKeySet.Remote.URI` cannot be fetched (after the entry's retries). A remote set keeps its last good keys; with none, the proxies refuse that provider's tokens (401 REMORA_E_PROXY_JWT_INVALID, reason no_keys).",
    remedy:
      "Make the file readable by the agent, or the URI reachable from the agent's host (the message names the error); the agent fetches again every `CacheDuration` (sooner while it has no keys) and re-reads files when it builds snapshots.",
  },
  REMORA_E_AGENT_MTLS_PERMISSIVE_NOT_ALLOWED: {
    meaning:
      'An instance\'s `MutualTLSMode` is "permissive" (its definition\'s `proxy.mutual_tls_mode`, its service-defaults or proxy-defaults global), but the `mesh` entry does not set `AllowEnablingPermissiveMutualTLS = true` (it is unset, false, or was turned off since): its sidecar requires mTLS (strict), so callers outside the mesh are refused. Consul refuses to write such entries while the flag is off; one written before the flag was turned off is reported here.',
    remedy:
      'To let plain callers of the app\'s port through while they are onboarded, set `AllowEnablingPermissiveMutualTLS = true` in the mesh entry (`consul config write`); the agent applies permissive to new connections at once. Otherwise set `MutualTLSMode = "strict"` (or remove it) where the message says (docs/agent.md, "Permissive mutual TLS").',
  },
  REMORA_E_AGENT_MTLS_PERMISSIVE_NOT_TRANSPARENT: {
    meaning:
      'An instance\'s definition or its service-defaults set `MutualTLSMode = "permissive"`, but the instance is not transparent: permissive applies to plain callers that the inbound redirect of the app\'s port sends to the sidecar (as in Consul, where the mode is supported with transparent proxy only). Without the redirect, callers outside the mesh reach the app directly, so the sidecar stays strict.',
    remedy:
      'Set `transparent: true` (or `proxy.mode = "transparent"`) on the instance if its app\'s port should be redirected to the sidecar (docs/transparent.md); otherwise remove the permissive setting.',
  },
  REMORA_E_AGENT_INGRESS_TLS_INVALID: {
    meaning:
      "A TLS listener of an ingress gateway's entry cannot be served as written: `TLSMinVersion`/`TLSMaxVersion` is not a TLS version, the maximum is below TLS 1.2 or below the minimum, `CipherSuites` names a suite Node cannot use, is set with TLSv1_3 as the minimum, or names only ECDSA suites (the gateway's certificate has an RSA key). The message names the field (the listener's own `TLS`, else the gateway's). That listener is left out — never served in plain instead; the others keep serving.",
    remedy:
      'Fix the field the message names (`consul config write`), following docs/gateways.md ("TLS"): versions TLSv1_2 or TLSv1_3, suites from the list in the message.',
  },
  REMORA_E_AGENT_INGRESS_SDS_UNSUPPORTED: {
    meaning:
      "An ingress gateway's entry sets `TLS.SDS` (gateway, listener or service): certificates from an external SDS server, which Remora does not support. The rest of the entry applies: TLS listeners serve the gateway's certificate from the mesh CA.",
    remedy:
      'Drop the `SDS` block and let callers trust the mesh CA root (docs/gateways.md, "TLS"), or terminate TLS with your own certificate in front of the gateway.',
  },
  REMORA_E_AGENT_TERMINATING_NOT_APPLIED: {
    meaning:
      "A part of a terminating gateway's `terminating-gateway` entry cannot be applied by the agent that runs the gateway: the entry is missing or malformed (the gateway then links no service), a service is named twice, is the gateway itself or is not a service name, or `CertFile` or `KeyFile` is set without the other two TLS files. The service named is left out; the gateway keeps serving the others.",
    remedy:
      'Fix the entry the message names (`consul config write`), following docs/gateways.md ("Terminating gateways"); `remora status` lists the problems until the entry is fixed.',
  },
  REMORA_E_AGENT_TERMINATING_TLS_FILE: {
    meaning:
      "A `CAFile`, `CertFile` or `KeyFile` of a service in a terminating gateway's entry cannot be read on the gateway's host (missing, unreadable, or not PEM), so the gateway cannot originate TLS to that external service. That service is left out until the file can be read; the gateway keeps serving its other services.",
    remedy:
      'Put the file the message names on the host that runs the gateway, readable by the agent (a PEM certificate, CA bundle or private key), or fix the path in the entry; the agent reads it again on the next change or `remora agent` reload (SIGHUP).',
  },
} as const satisfies Record<string, ErrorSpec>;
