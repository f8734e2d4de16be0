// The per-host agent (DESIGN §1, §5, §6).
export {
  createAgent,
  registrationFor,
  readinessCheckId,
  sidecarId,
  type Agent,
  type AgentOptions,
  type AgentSettings,
  type AgentStatus,
  type InstanceStatus,
  type StopOptions,
} from './agent.ts';
export {
  createHostAgent,
  createConsulPort,
  type AgentConfig,
  type HostAgent,
  type HostAgentOptions,
} from './host.ts';
export {
  decodeDefinitionFile,
  mergeDefinitions,
  NODE_META_KEY,
  type ServiceDefinition,
} from './definitions.ts';
export { renewalTime } from './renewal.ts';
export { startAdminServer } from './admin.ts';
export type { ConsulPort, ControlPort, TrustBundle, SignedCert, ConnectEntry } from './ports.ts';
export type { SpawnProxy, SpawnProxyRequest } from './spawn.ts';
export type { HandoverResult } from './supervisor.ts';
