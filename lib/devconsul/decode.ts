/**
 * Decodes Consul request bodies the way Consul's Go code does: `encoding/json` with
 * DisallowUnknownFields, case-insensitive field matching, the snake_case aliases Consul's
 * UnmarshalJSON methods accept, and Go duration strings. Errors carry Go's wording so that the
 * HTTP layer can answer `400 Request decode failed: <message>` exactly as Consul does.
 */
import { parseGoDuration } from './duration.ts';

export class DecodeError extends Error {}

type Spec =
  'string' | 'int' | 'bool' | 'duration' | 'any' | { array: Spec } | { map: Spec } | StructSpec;

interface StructSpec {
  goName: string;
  fields: Record<string, Spec>;
  /** snake_case alias → canonical field name. */
  snake?: Record<string, string>;
  /** Fields accepted but dropped (Consul parses and ignores them). */
  ignored?: string[];
  /** Unknown fields rejected (lib.DecodeJSON) or silently dropped (plain json.Unmarshal). */
  strict: boolean;
}

const GO_TYPE: Record<string, string> = {
  string: 'string',
  int: 'int',
  bool: 'bool',
  duration: 'time.Duration',
  any: 'interface {}',
};

const meshGateway: StructSpec = {
  goName: 'MeshGatewayConfig',
  fields: { Mode: 'string' },
  strict: false,
};

const upstream: StructSpec = {
  goName: 'Upstream',
  strict: true,
  fields: {
    DestinationType: 'string',
    DestinationNamespace: 'string',
    DestinationPartition: 'string',
    DestinationPeer: 'string',
    DestinationName: 'string',
    Datacenter: 'string',
    LocalBindAddress: 'string',
    LocalBindPort: 'int',
    LocalBindSocketPath: 'string',
    LocalBindSocketMode: 'string',
    Config: { map: 'any' },
    MeshGateway: meshGateway,
    CentrallyConfigured: 'bool',
  },
  snake: {
    destination_type: 'DestinationType',
    destination_namespace: 'DestinationNamespace',
    destination_partition: 'DestinationPartition',
    destination_peer: 'DestinationPeer',
    destination_name: 'DestinationName',
    local_bind_address: 'LocalBindAddress',
    local_bind_port: 'LocalBindPort',
    local_bind_socket_path: 'LocalBindSocketPath',
    local_bind_socket_mode: 'LocalBindSocketMode',
    mesh_gateway: 'MeshGateway',
  },
};

const exposePath: StructSpec = {
  goName: 'ExposePath',
  strict: true,
  fields: {
    ListenerPort: 'int',
    Path: 'string',
    LocalPathPort: 'int',
    Protocol: 'string',
    ParsedFromCheck: 'bool',
  },
  snake: {
    listener_port: 'ListenerPort',
    local_path_port: 'LocalPathPort',
    parsed_from_check: 'ParsedFromCheck',
  },
};

const proxyConfig: StructSpec = {
  goName: 'ConnectProxyConfig',
  strict: true,
  fields: {
    DestinationServiceName: 'string',
    DestinationServiceID: 'string',
    LocalServiceAddress: 'string',
    LocalServicePort: 'int',
    LocalServiceSocketPath: 'string',
    Mode: 'string',
    Config: { map: 'any' },
    Upstreams: { array: upstream },
    MeshGateway: meshGateway,
    Expose: {
      goName: 'ExposeConfig',
      strict: false,
      fields: { Checks: 'bool', Paths: { array: exposePath } },
    },
    TransparentProxy: {
      goName: 'TransparentProxyConfig',
      strict: false,
      fields: { OutboundListenerPort: 'int', DialedDirectly: 'bool' },
      snake: { outbound_listener_port: 'OutboundListenerPort', dialed_directly: 'DialedDirectly' },
    },
    AccessLogs: { map: 'any' },
  },
  snake: {
    destination_service_name: 'DestinationServiceName',
    destination_service_id: 'DestinationServiceID',
    local_service_address: 'LocalServiceAddress',
    local_service_port: 'LocalServicePort',
    local_service_socket_path: 'LocalServiceSocketPath',
    mesh_gateway: 'MeshGateway',
    transparent_proxy: 'TransparentProxy',
    access_logs: 'AccessLogs',
  },
};

const checkTypeFields: Record<string, Spec> = {
  Name: 'string',
  Status: 'string',
  Notes: 'string',
  ScriptArgs: { array: 'string' },
  HTTP: 'string',
  H2PING: 'string',
  H2PingUseTLS: 'bool',
  Header: { map: { array: 'string' } },
  Method: 'string',
  Body: 'string',
  DisableRedirects: 'bool',
  TCP: 'string',
  TCPUseTLS: 'bool',
  UDP: 'string',
  Interval: 'duration',
  AliasNode: 'string',
  AliasService: 'string',
  DockerContainerID: 'string',
  Shell: 'string',
  GRPC: 'string',
  GRPCUseTLS: 'bool',
  OSService: 'string',
  TLSServerName: 'string',
  TLSSkipVerify: 'bool',
  Timeout: 'duration',
  TTL: 'duration',
  SuccessBeforePassing: 'int',
  FailuresBeforeWarning: 'int',
  FailuresBeforeCritical: 'int',
  ProxyHTTP: 'string',
  ProxyGRPC: 'string',
  DeregisterCriticalServiceAfter: 'duration',
  OutputMaxSize: 'int',
};

const checkTypeSnake: Record<string, string> = {
  args: 'ScriptArgs',
  script_args: 'ScriptArgs',
  deregister_critical_service_after: 'DeregisterCriticalServiceAfter',
  docker_container_id: 'DockerContainerID',
  tls_server_name: 'TLSServerName',
  tls_skip_verify: 'TLSSkipVerify',
  grpc_use_tls: 'GRPCUseTLS',
  h2ping_use_tls: 'H2PingUseTLS',
};

const checkType: StructSpec = {
  goName: 'CheckType',
  strict: true,
  fields: { CheckID: 'string', ...checkTypeFields },
  snake: checkTypeSnake,
  ignored: ['ServiceID', 'service_id'],
};

/** `/v1/agent/check/register` body (structs.CheckDefinition). */
export const checkDefinitionSpec: StructSpec = {
  goName: 'CheckDefinition',
  strict: true,
  fields: { ID: 'string', ServiceID: 'string', Token: 'string', ...checkTypeFields },
  snake: { ...checkTypeSnake, service_id: 'ServiceID' },
};

const serviceAddress: StructSpec = {
  goName: 'ServiceAddress',
  strict: true,
  fields: { Address: 'string', Port: 'int' },
};

export const serviceDefinitionSpec: StructSpec = {
  goName: 'ServiceDefinition',
  strict: true,
  fields: {
    Kind: 'string',
    ID: 'string',
    Name: 'string',
    Tags: { array: 'string' },
    Address: 'string',
    TaggedAddresses: { map: serviceAddress },
    Meta: { map: 'string' },
    Port: 'int',
    Ports: {
      array: {
        goName: 'ServicePort',
        strict: true,
        fields: { Name: 'string', Port: 'int', Default: 'bool' },
      },
    },
    SocketPath: 'string',
    Check: checkType,
    Checks: { array: checkType },
    Weights: { goName: 'Weights', strict: true, fields: { Passing: 'int', Warning: 'int' } },
    Token: 'string',
    EnableTagOverride: 'bool',
    Locality: { goName: 'Locality', strict: true, fields: { Region: 'string', Zone: 'string' } },
    Proxy: proxyConfig,
    Connect: {
      goName: 'ServiceConnect',
      strict: false,
      fields: { Native: 'bool', SidecarService: 'self' as unknown as Spec },
      snake: { sidecar_service: 'SidecarService' },
    },
  },
  snake: { enable_tag_override: 'EnableTagOverride', tagged_addresses: 'TaggedAddresses' },
};
// The sidecar is itself a service definition.
(serviceDefinitionSpec.fields.Connect as StructSpec).fields.SidecarService = serviceDefinitionSpec;

/** `/v1/agent/check/update/:id` body. */
export const checkUpdateSpec: StructSpec = {
  goName: 'checkUpdate',
  strict: true,
  fields: { Status: 'string', Output: 'string' },
};

function jsonKind(v: unknown): string {
  if (Array.isArray(v)) return 'array';
  if (v === null) return 'null';
  if (typeof v === 'object') return 'object';
  if (typeof v === 'boolean') return 'bool';
  return typeof v;
}

function goTypeName(spec: Spec): string {
  if (typeof spec === 'string') return GO_TYPE[spec] ?? spec;
  if ('array' in spec) return `[]${goTypeName(spec.array)}`;
  if ('map' in spec) return `map[string]${goTypeName(spec.map)}`;
  return `structs.${spec.goName}`;
}

function typeError(v: unknown, spec: Spec, where: string): DecodeError {
  const kind = jsonKind(v);
  const shown = kind === 'number' ? `number ${String(v)}` : kind;
  return new DecodeError(
    `json: cannot unmarshal ${shown} into Go ${where} of type ${goTypeName(spec)}`,
  );
}

function decodeValue(v: unknown, spec: Spec, where: string): unknown {
  if (v === null) return undefined;
  if (typeof spec === 'string') {
    switch (spec) {
      case 'string':
        if (typeof v !== 'string') throw typeError(v, spec, where);
        return v;
      case 'int':
        if (typeof v !== 'number' || !Number.isInteger(v)) throw typeError(v, spec, where);
        return v;
      case 'bool':
        if (typeof v !== 'boolean') throw typeError(v, spec, where);
        return v;
      case 'duration':
        // Consul decodes durations through interface{}: strings are parsed, numbers are
        // nanoseconds, anything else is ignored.
        if (typeof v === 'string') {
          try {
            return parseGoDuration(v);
          } catch (err) {
            throw new DecodeError((err as Error).message);
          }
        }
        if (typeof v === 'number') return Math.trunc(v);
        return undefined;
      default:
        return v;
    }
  }
  if ('array' in spec) {
    if (!Array.isArray(v)) throw typeError(v, spec, where);
    return v.map((item) => decodeValue(item, spec.array, where) ?? zeroOf(spec.array));
  }
  if ('map' in spec) {
    if (typeof v !== 'object' || Array.isArray(v)) throw typeError(v, spec, where);
    const out: Record<string, unknown> = {};
    for (const [k, item] of Object.entries(v as Record<string, unknown>)) {
      out[k] = decodeValue(item, spec.map, where) ?? zeroOf(spec.map);
    }
    return out;
  }
  return decodeStruct(v, spec, where);
}

function zeroOf(spec: Spec): unknown {
  if (spec === 'string') return '';
  if (spec === 'int' || spec === 'duration') return 0;
  if (spec === 'bool') return false;
  return null;
}

function decodeStruct(v: unknown, spec: StructSpec, where: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw typeError(v, spec, where === 'value' ? 'value' : where);
  }
  const names = Object.keys(spec.fields);
  const snake = spec.snake ?? {};
  const pascal: Record<string, unknown> = {};
  const snakeValues: Record<string, unknown> = {};
  for (const [key, raw] of Object.entries(v as Record<string, unknown>)) {
    // Go matches the exact name first, then case-insensitively.
    let canonical = names.find((n) => n === key);
    let viaSnake = false;
    if (!canonical && Object.hasOwn(snake, key)) {
      canonical = snake[key];
      viaSnake = true;
    }
    if (!canonical) {
      canonical = names.find((n) => n.toLowerCase() === key.toLowerCase());
    }
    if (!canonical) {
      const snakeKey = Object.keys(snake).find((n) => n.toLowerCase() === key.toLowerCase());
      if (snakeKey) {
        canonical = snake[snakeKey];
        viaSnake = true;
      }
    }
    if (!canonical) {
      if (spec.ignored?.some((n) => n.toLowerCase() === key.toLowerCase())) continue;
      if (spec.strict) throw new DecodeError(`json: unknown field "${key}"`);
      continue;
    }
    const fieldSpec = spec.fields[canonical] as Spec;
    const decoded = decodeValue(raw, fieldSpec, `struct field ${spec.goName}.${canonical}`);
    if (decoded === undefined) continue;
    if (viaSnake) snakeValues[canonical] = decoded;
    else pascal[canonical] = decoded;
  }
  // Consul's UnmarshalJSON methods take the snake value only where the PascalCase one is unset.
  for (const [k, val] of Object.entries(snakeValues)) {
    if (isZero(pascal[k])) pascal[k] = val;
  }
  return pascal;
}

function isZero(v: unknown): boolean {
  return (
    v === undefined ||
    v === '' ||
    v === 0 ||
    v === false ||
    (Array.isArray(v) && v.length === 0) ||
    (typeof v === 'object' && v !== null && Object.keys(v).length === 0)
  );
}

/**
 * Parses a request body as JSON and decodes it against a Consul struct. Throws DecodeError
 * whose message is what Consul prints after "Request decode failed: ".
 */
export function decodeBody(body: string, spec: StructSpec): Record<string, unknown> {
  if (body.trim() === '') throw new DecodeError('EOF');
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch (err) {
    throw new DecodeError(goSyntaxMessage(body, err));
  }
  return decodeStruct(parsed, spec, 'value');
}

function goSyntaxMessage(body: string, err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  if (/end of JSON input|Unterminated|Unexpected end/i.test(msg)) return 'unexpected EOF';
  const pos = /position (\d+)/.exec(msg);
  const at = pos ? Number(pos[1]) : body.search(/[^\s]/);
  const ch = body[at] ?? '';
  if (at <= body.search(/[^\s]/)) return `invalid character '${ch}' looking for beginning of value`;
  const before = body.slice(0, at).trimEnd().slice(-1);
  if (before === '{' || (before === ',' && ch !== '"'))
    return `invalid character '${ch}' looking for beginning of object key string`;
  return `invalid character '${ch}' after object key:value pair`;
}
