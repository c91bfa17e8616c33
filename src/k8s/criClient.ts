// A CRI v1 RuntimeService client on a unix socket: the calls nettrace makes, each with a deadline,
// answers typed as far as nettrace reads them.
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { CRI_V1 } from './criApi';

export interface CriMetadata { name: string; uid: string; namespace: string; attempt: number }
export interface CriSandbox { id: string; metadata: CriMetadata | null; state: string; labels: Record<string, string>; annotations: Record<string, string> }
export interface CriSandboxStatus {
  status: (CriSandbox & { network: { ip: string; additional_ips: { ip: string }[] } | null }) | null;
  /** with verbose: runtime-specific JSON strings (containerd and CRI-O: "info") */
  info: Record<string, string>;
}
export interface CriVersion { version: string; runtime_name: string; runtime_version: string; runtime_api_version: string }

export interface SandboxConfig {
  metadata: { name: string; namespace: string; uid: string; attempt?: number };
  hostname?: string;
  log_directory?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  linux?: { cgroup_parent?: string; security_context?: { namespace_options?: { network?: 'POD' | 'NODE'; pid?: 'POD' | 'CONTAINER' | 'NODE'; ipc?: 'POD' | 'NODE' } } };
}

type Unary = (req: object, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: unknown) => void) => void;

let service: grpc.ServiceClientConstructor | undefined;
function runtimeService(): grpc.ServiceClientConstructor {
  if (!service) {
    // keepCase: the descriptor's snake_case names; enums as their names; maps and repeated fields always present
    const def = protoLoader.fromJSON(CRI_V1, { keepCase: true, enums: String, longs: Number, defaults: true, arrays: true, objects: false });
    const pkg = grpc.loadPackageDefinition(def) as unknown as { runtime: { v1: { RuntimeService: grpc.ServiceClientConstructor } } };
    service = pkg.runtime.v1.RuntimeService;
  }
  return service;
}

/** Most a CRI answer may be: a node's whole sandbox list fits in far less. */
const MAX_MESSAGE = 16 << 20;

export class CriClient {
  private readonly client: grpc.Client;

  constructor(readonly socket: string, private readonly deadlineMs = 5_000) {
    const Ctor = runtimeService();
    this.client = new Ctor(`unix:${socket}`, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': MAX_MESSAGE,
      // a unix socket has no name to resolve or balance: one connection, retried quickly
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1_000,
    });
  }

  private call<T>(method: string, req: object, deadlineMs = this.deadlineMs): Promise<T> {
    const fn = (this.client as unknown as Record<string, Unary>)[method]!.bind(this.client);
    return new Promise((resolve, reject) => {
      fn(req, new grpc.Metadata(), { deadline: Date.now() + deadlineMs }, (err, res) => (err ? reject(err) : resolve(res as T)));
    });
  }

  version(): Promise<CriVersion> {
    return this.call('Version', { version: 'v1' });
  }

  listReadySandboxes(): Promise<CriSandbox[]> {
    return this.call<{ items: CriSandbox[] }>('ListPodSandbox', { filter: { state: { state: 'SANDBOX_READY' } } }).then((r) => r.items);
  }

  sandboxStatus(id: string, verbose: boolean): Promise<CriSandboxStatus> {
    return this.call('PodSandboxStatus', { pod_sandbox_id: id, verbose });
  }

  /** Making a sandbox runs the CNI plugins: give it longer than a read. */
  runSandbox(config: SandboxConfig, deadlineMs = 60_000): Promise<string> {
    return this.call<{ pod_sandbox_id: string }>('RunPodSandbox', { config }, deadlineMs).then((r) => r.pod_sandbox_id);
  }

  stopSandbox(id: string, deadlineMs = 30_000): Promise<void> {
    return this.call<void>('StopPodSandbox', { pod_sandbox_id: id }, deadlineMs);
  }

  removeSandbox(id: string, deadlineMs = 30_000): Promise<void> {
    return this.call<void>('RemovePodSandbox', { pod_sandbox_id: id }, deadlineMs);
  }

  close(): void {
    this.client.close();
  }
}

export function isGrpcError(err: unknown): err is grpc.ServiceError {
  return typeof err === 'object' && err !== null && typeof (err as { code?: unknown }).code === 'number' && 'details' in err;
}

export const GrpcStatus = grpc.status;
