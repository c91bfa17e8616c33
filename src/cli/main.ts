// nettrace's command line.
import path from 'node:path';
import { Argument, Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { completionScript, SHELLS, type Shell } from './completion';
import { durationOption } from './duration';
import { ErrorCodes, NettraceError, usageError } from '../errors';
import { parseProto } from '../flow/spec';
import { detachAllLive } from '../probe/attach';
import { cleanupEverywhere } from '../probe/cleanup';
import { checkPrefix, testbedDownCri, testbedStatus, testbedUpCri } from '../testbed/testbed';
import { CNI_MODES, isCniMode, type CniMode } from '../topology/cni';
import { parseListenAddress } from '../export/http';
import { otlpEndpoint } from '../export/otlpUrl';
import { currentNetns, listNamedNetns, namedNetns, type NetnsRef } from '../topology/netns';
import { startAgent } from '../agent/agent';
import { diagnosisExitCode, formatDiagnosis, VERDICT_EXIT } from '../export/diagnosis';
import { pathToJsonLine } from '../export/json';
import { formatPathTable } from '../export/table';
import { PcapngFile } from '../export/pcapngFile';
import { SNAPLEN_MAX } from '../probe/config';
import { EVERY_MAX, validEvery } from '../flow/every';
import { formatFlow } from '../flow/spec';
import { advise } from '../probe/advice';
import { packageVersion } from '../probe/paths';
import { localTarget, runDiagnose } from '../session/diagnose';
import { runDnsDiagnose } from '../session/dnsDiagnose';
import type { DnsDiagnosis } from '../flow/dnsVerdict';
import { dnsExitCode, formatDnsDiagnosis } from '../export/dnsDiagnosis';
import type { Diagnosis } from '../flow/verdict';
import { resolveAgents } from '../session/agentClient';
import { closeCluster, connectAgents, remoteTarget, startRemoteFollow, type RemoteCluster } from '../session/remote';
import type { PacketPath } from '../flow/path';
import { readFileSync } from 'node:fs';
import { constants as osConstants, hostname } from 'node:os';
import { startFollow, type CapturedHop, type ReadyEvent } from '../session/follow';
import { viewCluster } from '../session/cluster';
import { API_PORT } from '../session/protocol';
import { readTokenFile } from '../session/token';
import { requireBtf, requireRoot } from './preflight';
import { checkFlowText, flowPods, joinAndClose, resolveFlowNames } from './names';

const log = (s: string) => process.stderr.write(s + '\n');

interface FlowCommandOptions {
  flow: string; proto?: string; output: 'table' | 'json'; netns?: string; nodes?: string; cni?: string; agents?: string; tokenFile?: string; ca?: string;
  namespace?: string; kubeconfig?: string; criSocket?: string;
}

/** --agents: the cluster as the agents describe it; null to work on this machine's namespaces. */
async function remoteCluster(o: FlowCommandOptions): Promise<RemoteCluster | null> {
  if (o.agents === undefined) {
    if (o.tokenFile !== undefined || o.ca !== undefined) throw usageError('--token-file and --ca go with --agents', 'name the agents with --agents URL,...');
    return null;
  }
  if (netnsList(o) !== undefined) throw usageError('--netns and --agents do not go together', 'with --agents each agent watches its own node');
  if (o.tokenFile === undefined) throw usageError('--agents needs --token-file', 'give the file holding the token the agents were given');
  let ca: Buffer | undefined;
  if (o.ca !== undefined) {
    try {
      ca = readFileSync(o.ca);
    } catch (err) {
      throw usageError(`--ca ${o.ca}: ${(err as Error).message}`, 'give the PEM file of the CA that signed the agents\' certificates');
    }
  }
  const auth = { token: readTokenFile(o.tokenFile), ...(ca ? { ca } : {}) };
  return connectAgents(await resolveAgents(o.agents, auth), auth);
}

/** The one line scripts wait for: every hook is attached. */
function readyLine(what: string, flow: string, r: ReadyEvent): string {
  return `ready: ${what} ${flow} on ${r.devices} devices in ${r.namespaces} namespaces (${r.attach}; ${r.modes.join(', ')})`;
}

function positiveInt(flag: string) {
  return (v: string): number => {
    if (!/^\d+$/.test(v) || Number(v) < 1) throw new InvalidArgumentError(`${flag} takes a whole number of at least 1`);
    return Number(v);
  };
}

/** 128 + the number of the signal follow or diagnose is stopping on, once one came. */
let signalExitCode: number | null = null;

/**
 * Runs stop on SIGINT, SIGTERM or SIGHUP (a closed terminal or ssh session), whose default
 * action would kill nettrace with its programs still on the devices (classic tc filters stay
 * until removed). A second signal while stopping detaches what is left at once and exits.
 * With exitCode, the process exits 128 + the signal's number, as a shell reports it.
 */
function onStopSignals(stop: (sig: NodeJS.Signals) => void, exitCode = true): void {
  let stopping = false;
  const handler = (sig: NodeJS.Signals) => {
    if (exitCode) process.exitCode = signalExitCode = 128 + (osConstants.signals[sig] ?? 0);
    if (stopping) {
      detachAllLive();
      process.exit();
    }
    stopping = true;
    stop(sig);
  };
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, handler);
}

/** The exit codes, for --help and the README. */
const EXIT_CODES_HELP = `
Exit codes:
  0   success; diagnose: the flow is healthy
  1   internal error (please report it); testbed status: the test cluster is down
  2   usage: a bad option, flag or --flow
  3   permission: not root
  4   kernel: no BTF, or older than Linux 6.2 (tcx needs 6.6)
  5   not found: a namespace, device, pod or tool
  6   BPF: loading or attaching a program failed
  7   testbed: the test cluster could not be built or read
  ${VERDICT_EXIT.BROKEN}  diagnose: the flow is BROKEN
  ${VERDICT_EXIT.SLOW}  diagnose: the flow is SLOW
  129, 130, 143  stopped by SIGHUP, SIGINT (Ctrl-C) or SIGTERM, after detaching`;

/** --netns, or --nodes, its old name: scripts written for it keep working. */
function netnsList(o: { netns?: string; nodes?: string }): string | undefined {
  if (o.netns !== undefined && o.nodes !== undefined) throw usageError('--nodes is the old name of --netns', 'give --netns only');
  return o.netns ?? o.nodes;
}

/** --netns, else the test cluster's nodes when it is up, else our own namespace (a real node). */
function resolveNodes(list: string | undefined): NetnsRef[] {
  if (list !== undefined) {
    const names = list.split(',').map((s) => s.trim()).filter(Boolean);
    if (names.length === 0) throw usageError('--netns is empty', 'name network namespaces, e.g. --netns node1,node2');
    return names.map(namedNetns);
  }
  const tb = testbedStatus();
  return tb ? tb.nodes.map((n) => namedNetns(n.netns)) : [currentNetns()];
}

/** The agent's node: --netns with one namespace, else where it runs, named after its /run/netns entry if it has one. */
function resolveAgentNode(list: string | undefined): NetnsRef {
  if (list !== undefined) {
    const names = list.split(',').map((s) => s.trim()).filter(Boolean);
    if (names.length !== 1) throw names.length ? agentNodeError(names) : usageError('--netns is empty', 'name the node\'s network namespace, e.g. --netns node1');
    return namedNetns(names[0]!);
  }
  const here = currentNetns();
  for (const name of listNamedNetns()) {
    try {
      const ns = namedNetns(name);
      if (ns.ino === here.ino) return { ...here, name };
    } catch {
      // a stale entry: not ours
    }
  }
  return here;
}

function agentNodeError(names: string[]): NettraceError {
  return new NettraceError('USAGE', `an agent watches one node, not ${names.length} (${names.join(', ')})`,
    'start one agent per node, e.g. `nettrace agent --netns node1` and `nettrace agent --netns node2`');
}

function nonNegativeInt(flag: string) {
  return (v: string): number => {
    if (!/^\d+$/.test(v)) throw new InvalidArgumentError(`${flag} takes a whole number (0 switches it off)`);
    return Number(v);
  };
}

/** follow --snaplen: bytes of each packet the kernel copies for -w */
const DEFAULT_SNAPLEN = 128;

function snaplenOption(v: string): number {
  if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > SNAPLEN_MAX) throw new InvalidArgumentError(`--snaplen takes a whole number of bytes from 1 to ${SNAPLEN_MAX}`);
  return Number(v);
}

function skewMs(v: string): number {
  const n = Number(v);
  if (!/^-?\d+(\.\d+)?$/.test(v) || Math.abs(n) > 3_600_000) throw new InvalidArgumentError('--clock-skew-ms takes milliseconds, at most an hour either way');
  return n;
}

function powerOfTwo(flag: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || n < 1 || n > 65536 || (n & (n - 1)) !== 0) throw new InvalidArgumentError(`${flag} takes a power of two from 1 to 65536`);
    return n;
  };
}

/** follow --every: what the kernel's rule takes (flow/every) */
function everyOption(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || !validEvery(n)) throw new InvalidArgumentError(`--every takes a power of two from 1 to ${EVERY_MAX}`);
  return n;
}

/** A command's examples for its --help: what each does, then the command line. */
function examples(...items: [what: string, line: string][]): string {
  return '\nExamples:\n' + items.map(([what, line]) => `  # ${what}\n  ${line}`).join('\n');
}

const FLOW_EXAMPLE = "--flow '10.244.1.5 -> 10.244.2.8:80'";

function checkCni(cni: string): asserts cni is CniMode {
  if (!isCniMode(cni)) {
    throw usageError(`--cni ${cni} is not a mode this testbed builds`, `use one of: ${CNI_MODES.join(', ')}`);
  }
}

// the YAML parser is for `testbed policy` only: not a cost of every other command (the agent's memory)
const testbedPolicy = () => import('../testbed/policy');

function buildProgram(): Command {
  // kubectl runs `kubectl nettrace ...` as kubectl-nettrace: help and errors then say what the user typed
  const program = new Command(path.basename(process.argv[1] ?? '') === 'kubectl-nettrace' ? 'kubectl nettrace' : 'nettrace')
    .description('Trace packets hop by hop across Kubernetes nodes with eBPF')
    .version(packageVersion() ?? 'unknown (no package.json of nettrace\'s found)', '-V, --version', 'print the version')
    .exitOverride()
    // commander's own errors are printed by fail(), in the one-line format of all the others
    .configureOutput({ writeErr: (s) => process.stderr.write(s), outputError: () => {} })
    .addHelpText('after', EXIT_CODES_HELP + '\n' + examples(
      ['build the two-node test cluster (network namespaces on this machine)', 'nettrace testbed up'],
      ['show each packet of a flow crossing the nine steps', `nettrace follow ${FLOW_EXAMPLE} --count 2`],
      ['say where and why a flow breaks or slows', `nettrace diagnose ${FLOW_EXAMPLE}`],
      ['tab completion in this shell', 'source <(nettrace completion bash)'],
    ));

  /** What every command about one flow takes. */
  // diagnose --dns names its flow itself: --flow is required of the other commands only
  const flowCommand = (name: string, description: string, flowRequired = true) => program.command(name)
    .description(description)
    .addOption(new Option('--flow <spec>', "the flow: 'SRC[:PORT] -> DST[:PORT]', each an IP, NAMESPACE/POD (or POD in -n's namespace) or svc/NAMESPACE/NAME:PORT").makeOptionMandatory(flowRequired))
    .addOption(new Option('--proto <proto>', 'tcp, udp or icmp (default: tcp with ports, icmp without)'))
    .addOption(new Option('-o, --output <format>', 'output format').choices(['table', 'json']).default('table'))
    .option('--netns <name,...>', 'network namespaces acting as nodes, when a whole cluster shares one kernel (default: the test cluster, else this host)')
    .addOption(new Option('--nodes <name,...>', 'the old name of --netns').hideHelp())
    .addOption(new Option('--cni <mode>', 'the CNI mode, when detecting it from the nodes is not what you want').choices(CNI_MODES))
    .option('--agents <url,...>', 'trace through the agents on the nodes (http(s)://HOST:PORT, or dns://NAME:PORT for every address of a name), from any machine that reaches them')
    .option('--token-file <file>', 'with --agents: the token the agents were given')
    .option('--ca <file>', 'with --agents over https: the CA certificate (PEM) that signed the agents\' certificates')
    .option('-n, --namespace <ns>', 'the namespace of a pod named without one in --flow (POD[:PORT]); default: default')
    .option('--kubeconfig <file>', 'pod and Service names from this API server (default: in-cluster, else $KUBECONFIG or ~/.kube/config, else the CRI socket; only when --flow names pods)')
    .option('--cri-socket <path,...>', 'on a node without API access: pod names from the container runtime (default: /run/containerd/containerd.sock, /run/crio/crio.sock)');

  flowCommand('follow', 'show each packet of a flow crossing the nine steps between two pods, live')
    .option('--count <n>', 'stop after n packets', positiveInt('--count'))
    .option('--timeout <duration>', 'stop after this long: 30s, 2m, 1h (a plain number is seconds; at most 24h)', durationOption('--timeout', 's'))
    .addOption(new Option('--grace <duration>', 'report a path incomplete when its next hop has not come in this long; a plain number is milliseconds')
      .argParser(durationOption('--grace', 'ms')).default(1000, '1s'))
    .addOption(new Option('--attach <mechanism>', 'tcx links (kernel 6.6+) or classic tc filters').choices(['tcx', 'tc']).default('tcx'))
    .option('-w, --write <file>', 'also write the packets to FILE as pcapng, for tshark -r, tcpdump -r or Wireshark: one interface per node/device/hook, one packet per hop, its step in the comment (not with --agents yet)')
    .option('--snaplen <n>', `with -w: the first n bytes of each packet, copied in the kernel, 1 to ${SNAPLEN_MAX} (default ${DEFAULT_SNAPLEN})`, snaplenOption)
    .option('--every <n>', `a busy TCP flow: follow the data skb at every n x 64 KiB of the stream and 1 in n pure ACKs, the same packets on both nodes; SYN, RST and FIN without data always (a power of two, 1 to ${EVERY_MAX}; default 1: every packet)`, everyOption)
    .addHelpText('after', examples(
      ['two packets of an HTTP flow and their replies, as a table', `nettrace follow ${FLOW_EXAMPLE} --count 2`],
      ['a bulk transfer at a fraction of the cost: one data packet per 1 MiB of the stream', `nettrace follow ${FLOW_EXAMPLE} --every 16 --timeout 10s`],
      ['by pod names (from the API server: --kubeconfig, the pod\'s service account or ~/.kube/config)', "nettrace follow --flow 'default/frontend -> default/backend:80' --count 2"],
      ['ten pings and their replies at every hop, into a file tshark reads (decode flannel\'s VXLAN port)',
        "nettrace follow --flow '10.244.1.5 -> 10.244.2.8' --count 20 -w ping.pcapng; tshark -r ping.pcapng -d udp.port==8472,vxlan"],
      ['every DNS query to a Service for 30 seconds, one JSON line per packet', "nettrace follow --flow '10.244.1.5 -> 10.96.0.10:53' --proto udp --timeout 30s -o json"],
      ['from any machine, through the agents on the nodes', `nettrace follow --agents dns://nettrace-agent.kube-system:9966 --token-file token ${FLOW_EXAMPLE}`],
      ['on network namespaces acting as nodes', `nettrace follow --netns node1,node2 ${FLOW_EXAMPLE}`],
    ))
    .action(async (o: FlowCommandOptions & { count?: number; timeout?: number; grace: number; attach: 'tcx' | 'tc'; write?: string; snaplen?: number; every?: number }) => {
      // handlers first: a signal that lands while connecting or attaching must still detach everything
      let stop: (() => void) | null = null;
      let interrupted = false;
      onStopSignals(() => {
        interrupted = true;
        if (stop) stop();
      });
      checkFlowText(o.flow, o, o.agents !== undefined);
      if (o.snaplen !== undefined && o.write === undefined) throw usageError('--snaplen goes with -w', 'give -w FILE too, or leave --snaplen out');
      // agents stream fixed-size records without the packet's bytes
      if (o.write !== undefined && o.agents !== undefined) {
        throw usageError('-w is not supported through agents yet', 'run follow -w on the node itself (nettrace follow -w FILE ... without --agents)');
      }
      const remote = await remoteCluster(o);
      if (!remote) {
        requireRoot();
        requireBtf();
      }
      // names to addresses before anything is attached; the pods' names onto the cluster for the output
      const named = await resolveFlowNames(o.flow, o.proto !== undefined ? parseProto(o.proto) : undefined, o, remote);
      const flow = named.flow;
      if ((o.every ?? 1) > 1 && flow.proto !== 'tcp') {
        named.source?.close();
        if (remote) closeCluster(remote);
        throw usageError(`--every samples TCP flows only; this flow is ${flow.proto}`, 'leave --every out: every packet of it is followed');
      }
      const view = remote ? null : viewCluster(resolveNodes(netnsList(o)), o.cni as CniMode | undefined);
      joinAndClose(remote ? remote.topology : view!.topology, named);
      const snaplen = o.write !== undefined ? o.snaplen ?? DEFAULT_SNAPLEN : 0;
      // opened before anything is attached: a path that cannot be written fails first
      const pcap = o.write !== undefined ? new PcapngFile(o.write, snaplen) : null;
      let writeFailed: unknown = null;
      const events = {
        flow, count: o.count ?? null, timeoutS: o.timeout ?? null, graceMs: o.grace, every: o.every,
        onPath: (p: PacketPath, captured?: CapturedHop[]) => {
          process.stdout.write(o.output === 'json' ? pathToJsonLine(p) + '\n' : formatPathTable(p) + '\n');
          if (!pcap || writeFailed) return;
          try {
            pcap.write(p, captured ?? []);
          } catch (err) {
            writeFailed = err;
            stop?.();
          }
        },
        onReady: (r: ReadyEvent) => log(readyLine('following', formatFlow(flow), r)),
        onWarning: (s: string) => log(`warning: ${s}`),
      };
      try {
        let session;
        try {
          session = remote
            ? startRemoteFollow({ ...events, cluster: remote })
            : startFollow({ ...events, cluster: view!, attach: o.attach, snaplen });
        } catch (err) {
          // nothing was followed: leave no file behind
          pcap?.discard();
          throw err;
        }
        stop = session.stop;
        if (interrupted) stop();
        await session.done;
      } finally {
        pcap?.close();
      }
      if (writeFailed) throw writeFailed;
      if (pcap) log(`wrote ${pcap.packets} packets to ${pcap.path}`);
    });

  flowCommand('diagnose', `send probes of a flow (or watch it) and say where and why it breaks or slows; exits 0 when healthy, ${VERDICT_EXIT.BROKEN} when broken, ${VERDICT_EXIT.SLOW} when slow`, false)
    .option('--passive', 'send nothing: watch the flow\'s real traffic')
    .option('--dns <name>', 'instead of --flow: ask the pod\'s DNS server for this name from --from, follow the query and its answer, and say what failed (dns-timeout, dns-nxdomain, dns-servfail, dns-no-endpoints)')
    .option('--from <pod-ip>', 'with --dns: the pod that asks')
    .option('--server <ip>', 'with --dns: the DNS server to ask (default: the pod\'s resolv.conf nameserver, e.g. the kube-dns ClusterIP)')
    .addOption(new Option('--seconds <duration>', 'how long --passive watches: 30s, 2m; a plain number is seconds; at most 24h')
      .argParser(durationOption('--seconds', 's')).default(5, '5s'))
    .addOption(new Option('--attach <mechanism>', 'tcx links (kernel 6.6+) or classic tc filters').choices(['tcx', 'tc']).default('tcx'))
    .addHelpText('after', examples(
      ['ICMP probes and one full-size packet with DF set', "nettrace diagnose --flow '10.244.1.5 -> 10.244.2.8'"],
      ['TCP probes to port 80; one JSON object with the verdict', `nettrace diagnose ${FLOW_EXAMPLE} -o json`],
      ['send nothing: watch the real traffic for 30 seconds', `nettrace diagnose ${FLOW_EXAMPLE} --passive --seconds 30s`],
      ['act on the verdict in a script', `nettrace diagnose ${FLOW_EXAMPLE} >/dev/null; case $? in 0) echo healthy;; 10) echo broken;; 11) echo slow;; esac`],
      ['resolve a Service from a pod through the cluster DNS, following the query', 'nettrace diagnose --dns iperf.default.svc.cluster.local --from 10.244.1.5'],
    ))
    .action(async (o: FlowCommandOptions & { passive?: boolean; seconds: number; attach: 'tcx' | 'tc'; dns?: string; from?: string; server?: string }) => {
      // as follow: handlers before anything is attached; the session detaches when the signal aborts it
      const interrupt = new AbortController();
      onStopSignals(() => interrupt.abort());
      if (o.dns !== undefined || o.from !== undefined || o.server !== undefined) return diagnoseDnsCommand(o, interrupt);
      if (o.flow === undefined) throw usageError('diagnose needs --flow (or --dns NAME --from POD_IP)', `e.g. nettrace diagnose ${FLOW_EXAMPLE}`);
      checkFlowText(o.flow, o, o.agents !== undefined);
      const remote = await remoteCluster(o);
      if (!remote) {
        requireRoot();
        requireBtf();
      }
      const named = await resolveFlowNames(o.flow, o.proto !== undefined ? parseProto(o.proto) : undefined, o, remote);
      const flow = named.flow;
      const view = remote ? null : viewCluster(resolveNodes(netnsList(o)), o.cni as CniMode | undefined);
      const topology = remote ? remote.topology : view!.topology;
      joinAndClose(topology, named);
      const pods = flowPods(topology, named);
      const target = remote ? remoteTarget(flow, remote) : localTarget(flow, view!, o.attach);
      let d: Diagnosis;
      try {
        d = await runDiagnose({
          flow, target, passive: !!o.passive, seconds: o.seconds, signal: interrupt.signal,
          onReady: (r) => log(readyLine('diagnosing', formatFlow(flow), r)),
          onWarning: (s) => log(`warning: ${s}`),
        });
      } catch (err) {
        // stopped by a signal: everything is detached, no verdict, the signal's exit code stands
        if (interrupt.signal.aborted) return;
        throw err;
      }
      process.stdout.write(o.output === 'json' ? JSON.stringify(pods ? { ...d, pods } : d) + '\n' : formatDiagnosis(flow, d, pods));
      process.exitCode = diagnosisExitCode(d);
    });

  /** diagnose --dns NAME --from POD_IP: on this machine's namespaces only (the client runs in the pod). */
  const diagnoseDnsCommand = async (o: FlowCommandOptions & { passive?: boolean; attach: 'tcx' | 'tc'; dns?: string; from?: string; server?: string }, interrupt: AbortController) => {
    if (o.dns === undefined || o.from === undefined) throw usageError('--dns and --from go together', 'e.g. nettrace diagnose --dns iperf.default.svc.cluster.local --from 10.244.1.5');
    if (o.flow !== undefined || o.passive || o.proto !== undefined) throw usageError('--dns names its own flow (the pod to its DNS server, udp/53)', 'drop --flow, --proto and --passive');
    if (o.agents !== undefined) throw usageError('--dns sends its queries from the pod on this machine', 'run it on the node, without --agents');
    requireRoot();
    requireBtf();
    const cluster = viewCluster(resolveNodes(netnsList(o)), o.cni as CniMode | undefined);
    let d: DnsDiagnosis;
    try {
      d = await runDnsDiagnose({
        name: o.dns, from: o.from, server: o.server, cluster, attach: o.attach, signal: interrupt.signal,
        onReady: (r) => log(readyLine('diagnosing', `dns ${o.dns} from ${o.from}`, r)),
        onWarning: (s) => log(`warning: ${s}`),
      });
    } catch (err) {
      if (interrupt.signal.aborted) return;
      throw err;
    }
    process.stdout.write(o.output === 'json' ? JSON.stringify(d) + '\n' : formatDnsDiagnosis(o.from, d));
    process.exitCode = dnsExitCode(d);
  };

  program.command('agent')
    .description('run on a node: per-step latency, drops and retransmits as Prometheus metrics, sampled packets as OTLP traces')
    .option('--netns <name>', 'the network namespace acting as this node (default: the one the agent runs in)')
    .addOption(new Option('--nodes <name>', 'the old name of --netns').hideHelp())
    .option('--metrics-addr <host:port>', 'where /metrics and /healthz listen (no token: keep it off networks strangers reach; NODE_IP:9101 for a Prometheus elsewhere)', '127.0.0.1:9101')
    .option('--otlp-endpoint <url>', 'OTLP/HTTP collector for spans, e.g. http://127.0.0.1:4318 (default: OTEL_EXPORTER_OTLP_ENDPOINT, else no spans; OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES name the resource)')
    .option('--sample <n>', '1 in n packets becomes a trace, the same packets on every node (0: none)', nonNegativeInt('--sample'), 1000)
    .option('--latency-every <n>', 'time the hops of 1 in n packets (a power of two): clock reads cost ~30 ns a hop', powerOfTwo('--latency-every'), 8)
    .option('--peers <url,...>', "other nodes' agents (http://HOST:PORT), to time the wire between nodes (step 6); with --token-file, the token is sent to them and required of them")
    .addOption(new Option('--attach <mechanism>', 'mixed: tcx links on the node\'s devices, classic tc filters on pods\' (a node with hundreds of pods attaches in a second, not in 15 s); tcx everywhere (kernel 6.6+; a CNI whose tcx programs on pod devices end the chain, such as Cilium\'s, then hides nothing from us); or tc everywhere (kernels before 6.6)').choices(['tcx', 'tc', 'mixed']).default('mixed'))
    .option('--api-addr <host:port>', `where the trace API listens for remote follow/diagnose (default: the node's underlay address, port ${API_PORT})`)
    .option('--token-file <file>', 'the bearer token callers of the trace API must present (without it the trace API is off)')
    .option('--tls-cert <file>', 'serve the trace API over TLS with this certificate (PEM)')
    .option('--tls-key <file>', 'the key of --tls-cert (PEM)')
    .option('--max-sessions <n>', 'trace sessions at once', positiveInt('--max-sessions'), 4)
    .option('--kubeconfig <file>', 'this node\'s pods\' Kubernetes names (metric labels, spans, /v1/node) from this API server (default: in-cluster, else $KUBECONFIG or ~/.kube/config, else the CRI socket, else pods are named by network namespace)')
    .option('--cri-socket <path,...>', 'on a node without API access: pod names from the container runtime (default: /run/containerd/containerd.sock, /run/crio/crio.sock)')
    .addOption(new Option('--rescan <duration>', 'full rescan of the node\'s devices, besides link events (a plain number is milliseconds)')
      .argParser(durationOption('--rescan', 'ms')).default(5000, '5s').hideHelp())
    .addOption(new Option('--clock-skew-ms <ms>', 'add this to the agent\'s wall clock: a node whose clock is off, for tests').argParser(skewMs).hideHelp())
    .addOption(new Option('--names-retry <duration>', 'while no source of names works, try again this often (tests)').argParser(durationOption('--names-retry', 'ms')).hideHelp())
    .addHelpText('after', examples(
      ['metrics only, on 127.0.0.1:9101', 'nettrace agent'],
      ['on a real node: metrics for a Prometheus elsewhere, spans to a collector, the trace API for follow --agents',
        'nettrace agent --token-file /etc/nettrace/token --metrics-addr 192.168.1.101:9101 --otlp-endpoint http://otel-collector:4318'],
      ['node1 of the test cluster, timing the wire with node2\'s agent', 'nettrace agent --netns node1 --metrics-addr 127.0.0.1:9101 --peers http://127.0.0.1:9102'],
    ))
    .action(async (o: {
      netns?: string; nodes?: string; metricsAddr: string; otlpEndpoint?: string; sample: number; latencyEvery: number; peers?: string; attach: 'tcx' | 'tc' | 'mixed'; rescan: number;
      apiAddr?: string; tokenFile?: string; tlsCert?: string; tlsKey?: string; maxSessions: number; clockSkewMs?: number;
      kubeconfig?: string; criSocket?: string; namesRetry?: number;
    }) => {
      const metricsAddr = parseListenAddress(o.metricsAddr);
      const apiAddr = o.apiAddr !== undefined ? parseListenAddress(o.apiAddr, '--api-addr') : null;
      if ((o.tlsCert === undefined) !== (o.tlsKey === undefined)) throw usageError('--tls-cert and --tls-key go together', 'give both, or neither for plain HTTP');
      if (o.tokenFile === undefined && (apiAddr || o.tlsCert)) throw usageError('the trace API needs --token-file', 'give the file holding the token callers must present');
      const token = o.tokenFile !== undefined ? readTokenFile(o.tokenFile) : null;
      const otlp = otlpEndpoint(o.otlpEndpoint);
      const peers = (o.peers ?? '').split(',').map((s) => s.trim()).filter(Boolean);
      for (const p of peers) {
        if (!/^https?:\/\/[^/\s]+\/?$/.test(p)) throw usageError(`--peers ${p} is not http://HOST:PORT`, "give the other agents' metrics addresses, e.g. http://192.168.1.102:9101");
      }
      requireRoot();
      requireBtf();
      const node = resolveAgentNode(netnsList(o));
      let stop: (() => Promise<void>) | null = null;
      let stopping = false;
      // a stopped agent exits 0: stopping it is how it ends
      onStopSignals(() => {
        stopping = true;
        if (stop) void stop().then(() => process.exit());
      }, false);
      const agent = await startAgent({
        node, metricsAddr, otlpEndpoint: otlp, sample: o.sample, latencyEvery: o.latencyEvery, peers, attach: o.attach, rescanMs: o.rescan,
        api: token ? { addr: apiAddr, token, tls: o.tlsCert ? { certFile: o.tlsCert, keyFile: o.tlsKey! } : null, maxSessions: o.maxSessions } : null,
        clockSkewMs: o.clockSkewMs,
        ...(o.namesRetry !== undefined ? { namesRetryMs: o.namesRetry } : {}),
        // the Kubernetes node name: the DaemonSet gives it (downward API), else the host's name
        names: {
          node: process.env.NODE_NAME || hostname(), kubeconfig: o.kubeconfig,
          criSockets: o.criSocket?.split(',').map((x) => x.trim()).filter(Boolean),
        },
        log: (s) => process.stderr.write(s + '\n'),
      });
      stop = agent.stop;
      if (stopping) await stop().then(() => process.exit());
    });

  const testbed = program.command('testbed').description('the built-in two-node test cluster, made of network namespaces');
  testbed.command('up')
    .description('build it (idempotent)')
    .option('--cni <mode>', 'CNI mode', 'flannel-vxlan')
    .option('--prefix <text>', 'prepended to every namespace name (letters, digits, - _ .)', checkPrefix, '')
    .option('--pod-mtu <bytes>', 'pod eth0 MTU (default: the mode\'s; 1500 with a tunnel reproduces the seed MTU case)', positiveInt('--pod-mtu'))
    .option('--cri', 'also run one containerd per node and make the pods default/frontend and default/backend through its CRI (flannel modes)')
    .addHelpText('after', examples(
      ['Flannel VXLAN, the default', 'nettrace testbed up'],
      ['with pods made by a real containerd, named through its CRI socket', 'nettrace testbed up --cri'],
      ['Calico with routes learned over BGP', 'nettrace testbed up --cni calico-bgp'],
      ['pods whose MTU does not fit the tunnel (diagnose then says mtu)', 'nettrace testbed up --pod-mtu 1500'],
    ))
    .action(async (o: { cni: string; prefix: string; podMtu?: number; cri?: boolean }) => {
      checkCni(o.cni);
      requireRoot();
      const s = await testbedUpCri({ prefix: o.prefix, podMtu: o.podMtu, cni: o.cni, cri: o.cri });
      process.stdout.write(`testbed up (${s.cni}): ${s.nodes.map((n) => `${n.netns} ${n.ip}`).join(', ')}; pods ${s.pods.map((p) => `${p.netns} ${p.ip}`).join(', ')}\n`);
      if (s.cri) {
        process.stdout.write(`  ${s.cri.runtime}: ${s.cri.sandboxes.map((p) => `${p.namespace}/${p.name} ${p.ip}`).join(', ')}; CRI sockets ${s.cri.nodes.map((n) => n.socket).join(',')}\n`);
      }
    });
  testbed.command('down')
    .description('remove it, also after a failed up')
    .option('--prefix <text>', 'prepended to every namespace name (letters, digits, - _ .)', checkPrefix, '')
    .action(async (o: { prefix: string }) => {
      requireRoot();
      const removed = await testbedDownCri(o.prefix);
      process.stdout.write(removed.length ? `testbed down: removed ${removed.join(', ')}\n` : 'testbed down: nothing to remove\n');
    });
  testbed.command('status')
    .description('say whether it is up')
    .option('--prefix <text>', 'prepended to every namespace name (letters, digits, - _ .)', checkPrefix, '')
    .action((o: { prefix: string }) => {
      const s = testbedStatus(o.prefix);
      if (!s) {
        process.stdout.write('testbed: down\n');
        process.exitCode = 1;
        return;
      }
      process.stdout.write(`testbed: up (${s.cni})\n`);
      for (const n of s.nodes) process.stdout.write(`  node ${n.netns} ${n.ip} pods ${n.podCidr}\n`);
      for (const p of s.pods) process.stdout.write(`  pod  ${p.netns} ${p.ip} on ${p.node}\n`);
      for (const p of s.cri?.sandboxes ?? []) process.stdout.write(`  pod  ${p.namespace}/${p.name} ${p.ip} on ${p.node} (containerd, netns ${p.netns})\n`);
    });
  const policy = testbed.command('policy').description('Kubernetes NetworkPolicies in the Calico modes, enforced in iptables as Calico\'s Felix does');
  policy.command('apply <file>')
    .description('apply a networking.k8s.io/v1 NetworkPolicy YAML file (replaces one of the same name)')
    .option('--prefix <text>', 'prepended to every namespace name (letters, digits, - _ .)', checkPrefix, '')
    .addHelpText('after', '\nSupported: spec.podSelector and peers\' podSelector/namespaceSelector (matchLabels), ipBlock.cidr,\n'
      + 'ports (TCP/UDP, port, endPort), policyTypes Ingress/Egress; no rules = deny. The pods are default/pod-a\n'
      + '(app=pod-a) and default/pod-b (app=pod-b). Anything else is refused with the field named.\n' + examples(
      ['pod-b admits nothing (diagnose then says network-policy)', 'nettrace testbed policy apply deny-b.yaml'],
    ))
    .action(async (file: string, o: { prefix: string }) => {
      requireRoot();
      const r = (await testbedPolicy()).policyApply(o.prefix, file);
      process.stdout.write(`policy ${r.policy.namespace}/${r.policy.name} applied; selects ${r.selected.length ? r.selected.map((p) => `${r.policy.namespace}/${p}`).join(', ') : 'no pod'}\n`);
    });
  policy.command('delete <name>')
    .description('remove a NetworkPolicy and its chains')
    .option('--prefix <text>', 'prepended to every namespace name (letters, digits, - _ .)', checkPrefix, '')
    .option('-n, --namespace <ns>', 'the policy\'s namespace', 'default')
    .action(async (name: string, o: { prefix: string; namespace: string }) => {
      requireRoot();
      const p = (await testbedPolicy()).policyDelete(o.prefix, name, o.namespace);
      process.stdout.write(`policy ${p.namespace}/${p.name} deleted\n`);
    });
  policy.command('list')
    .description('the NetworkPolicies applied')
    .option('--prefix <text>', 'prepended to every namespace name (letters, digits, - _ .)', checkPrefix, '')
    .action(async (o: { prefix: string }) => {
      for (const p of (await testbedPolicy()).policyList(o.prefix)) {
        const dirs = [p.ingress ? 'Ingress' : '', p.egress ? 'Egress' : ''].filter(Boolean).join(',');
        const sel = Object.entries(p.podSelector).map(([k, v]) => `${k}=${v}`).join(',') || '(all pods)';
        process.stdout.write(`${p.namespace}/${p.name} ${dirs} podSelector ${sel}\n`);
      }
    });

  program.command('cleanup')
    .description('remove hooks a killed nettrace left behind (classic tc filters; tcx links go by themselves)')
    .addHelpText('after', examples(['after a follow --attach tc that was killed with SIGKILL', 'nettrace cleanup']))
    .action(() => {
      requireRoot();
      const removed = cleanupEverywhere();
      process.stdout.write(removed.length ? removed.map((r) => `removed ${r.hook} filter on ${r.device} in ${r.netns}\n`).join('') : 'cleanup: nothing left behind\n');
    });

  program.command('completion')
    .description('print a shell completion script for nettrace\'s commands and options')
    .addArgument(new Argument('<shell>', 'the shell').choices(SHELLS))
    .addHelpText('after', examples(
      ['complete in this bash', 'source <(nettrace completion bash)'],
      ['complete in every bash', 'nettrace completion bash > ~/.local/share/bash-completion/completions/nettrace'],
      ['complete in every zsh (a directory of $fpath, before compinit runs)', 'nettrace completion zsh > "${fpath[1]}/_nettrace"'],
    ))
    .action((shell: Shell) => {
      process.stdout.write(completionScript(program, shell));
    });
  return program;
}

const program = buildProgram();

/** The command the arguments name (`nettrace testbed up`), for the help an error points to. */
function commandPath(argv: string[]): string {
  const names = ['nettrace'];
  let cmd: Command = program;
  for (const arg of argv.slice(2)) {
    const sub = cmd.commands.find((c) => c.name() === arg);
    if (!sub) break;
    names.push(arg);
    cmd = sub;
  }
  return names.join(' ');
}

/**
 * Commander's own errors (unknown option, missing value, a value an option parser refused) in
 * the one-line format of every other error: "error: unknown option '--x'\n(Did you mean --y?)"
 * becomes "nettrace: E_USAGE: unknown option '--x' (Did you mean --y?); see `nettrace follow --help`".
 */
function commanderLine(err: CommanderError, argv: string[]): string {
  const what = err.message.replace(/^error:\s*/, '').split('\n').map((l) => l.trim()).filter(Boolean).join(' ').replace(/\.$/, '');
  return `nettrace: E_USAGE: ${what}; see \`${commandPath(argv)} --help\``;
}

function fail(thrown: unknown): void {
  detachAllLive();
  const err = advise(thrown);
  if (err instanceof NettraceError) {
    process.stderr.write(err.line() + '\n');
    if (err.detail) process.stderr.write(err.detail.split('\n').map((l) => `  ${l}`).join('\n') + '\n');
    process.exitCode = err.exitCode;
  } else if (err instanceof CommanderError) {
    // help and version were asked for (exit 0), or help was shown for a missing command: printed already
    if (err.exitCode !== 0 && err.code !== 'commander.help') process.stderr.write(commanderLine(err, process.argv) + '\n');
    process.exitCode = err.exitCode === 0 ? 0 : ErrorCodes.USAGE.exit;
  } else {
    process.stderr.write(`nettrace: E_INTERNAL: ${(err as Error)?.stack ?? String(err)}; please report this\n`);
    process.exitCode = 1;
  }
  // what failed while stopping on a signal was cut short by it: the exit code says the signal
  if (signalExitCode !== null) process.exitCode = signalExitCode;
}

process.on('uncaughtException', (err) => {
  fail(err);
  process.exit();
});

// `nettrace follow ... | head`: the reader left. Node ignores SIGPIPE, so a write would throw
// EPIPE; stop as the signal would have stopped us (128 + 13), with nothing left attached.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE') throw err;
  detachAllLive();
  process.exit(141);
});

program.parseAsync(process.argv).catch(fail);
