// The part of the CRI v1 API (package runtime.v1, kubernetes/cri-api pkg/apis/runtime/v1/api.proto)
// that nettrace calls, as a protobufjs JSON descriptor: field names and numbers are the real
// API's, everything else is left out (unknown fields in answers are skipped by the decoder).
// Kept as code rather than a .proto file so it ships inside the compiled JavaScript.
import type { fromJSON } from '@grpc/proto-loader';

type INamespace = Parameters<typeof fromJSON>[0];

const str = (id: number) => ({ type: 'string', id });
const map = (id: number) => ({ keyType: 'string', type: 'string', id });
const rpc = (requestType: string, responseType: string) => ({ requestType, responseType, comment: '' });

export const CRI_V1: INamespace = {
  nested: {
    runtime: {
      nested: {
        v1: {
          nested: {
            RuntimeService: {
              methods: {
                Version: rpc('VersionRequest', 'VersionResponse'),
                RunPodSandbox: rpc('RunPodSandboxRequest', 'RunPodSandboxResponse'),
                StopPodSandbox: rpc('StopPodSandboxRequest', 'StopPodSandboxResponse'),
                RemovePodSandbox: rpc('RemovePodSandboxRequest', 'RemovePodSandboxResponse'),
                PodSandboxStatus: rpc('PodSandboxStatusRequest', 'PodSandboxStatusResponse'),
                ListPodSandbox: rpc('ListPodSandboxRequest', 'ListPodSandboxResponse'),
              },
            },
            VersionRequest: { fields: { version: str(1) } },
            VersionResponse: { fields: { version: str(1), runtime_name: str(2), runtime_version: str(3), runtime_api_version: str(4) } },
            PodSandboxMetadata: { fields: { name: str(1), uid: str(2), namespace: str(3), attempt: { type: 'uint32', id: 4 } } },
            PodSandboxState: { values: { SANDBOX_READY: 0, SANDBOX_NOTREADY: 1 } },
            NamespaceMode: { values: { POD: 0, CONTAINER: 1, NODE: 2, TARGET: 3 } },
            NamespaceOption: { fields: { network: { type: 'NamespaceMode', id: 1 }, pid: { type: 'NamespaceMode', id: 2 }, ipc: { type: 'NamespaceMode', id: 3 } } },
            LinuxSandboxSecurityContext: { fields: { namespace_options: { type: 'NamespaceOption', id: 1 } } },
            LinuxPodSandboxConfig: { fields: { cgroup_parent: str(1), security_context: { type: 'LinuxSandboxSecurityContext', id: 2 } } },
            PodSandboxConfig: {
              fields: {
                metadata: { type: 'PodSandboxMetadata', id: 1 }, hostname: str(2), log_directory: str(3),
                labels: map(6), annotations: map(7), linux: { type: 'LinuxPodSandboxConfig', id: 8 },
              },
            },
            RunPodSandboxRequest: { fields: { config: { type: 'PodSandboxConfig', id: 1 }, runtime_handler: str(2) } },
            RunPodSandboxResponse: { fields: { pod_sandbox_id: str(1) } },
            StopPodSandboxRequest: { fields: { pod_sandbox_id: str(1) } },
            StopPodSandboxResponse: { fields: {} },
            RemovePodSandboxRequest: { fields: { pod_sandbox_id: str(1) } },
            RemovePodSandboxResponse: { fields: {} },
            PodSandboxStatusRequest: { fields: { pod_sandbox_id: str(1), verbose: { type: 'bool', id: 2 } } },
            PodIP: { fields: { ip: str(1) } },
            PodSandboxNetworkStatus: { fields: { ip: str(1), additional_ips: { rule: 'repeated', type: 'PodIP', id: 2 } } },
            PodSandboxStatus: {
              fields: {
                id: str(1), metadata: { type: 'PodSandboxMetadata', id: 2 }, state: { type: 'PodSandboxState', id: 3 },
                network: { type: 'PodSandboxNetworkStatus', id: 5 }, labels: map(7), annotations: map(8),
              },
            },
            PodSandboxStatusResponse: { fields: { status: { type: 'PodSandboxStatus', id: 1 }, info: map(2) } },
            PodSandboxStateValue: { fields: { state: { type: 'PodSandboxState', id: 1 } } },
            PodSandboxFilter: { fields: { id: str(1), state: { type: 'PodSandboxStateValue', id: 2 }, label_selector: map(3) } },
            ListPodSandboxRequest: { fields: { filter: { type: 'PodSandboxFilter', id: 1 } } },
            PodSandbox: {
              fields: {
                id: str(1), metadata: { type: 'PodSandboxMetadata', id: 2 }, state: { type: 'PodSandboxState', id: 3 },
                labels: map(5), annotations: map(6),
              },
            },
            ListPodSandboxResponse: { fields: { items: { rule: 'repeated', type: 'PodSandbox', id: 1 } } },
          },
        },
      },
    },
  },
};
