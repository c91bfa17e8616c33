// nettrace's command line.
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { NettraceError, usageError } from '../errors';
import { parseFlowSpec, parseProto } from '../flow/spec';
import { detachAllLive } from '../probe/attach';
import { cleanupEverywhere } from '../probe/cleanup';
import { testbedDown, testbedStatus, testbedUp } from '../testbed/testbed';
import { CNI_MODES, isCniMode, type CniMode } from '../topology/cni';
import { parseListenAddress } from '../export/http';
import { otlpTracesUrl } from '../export/otlpUrl';
import { currentNetns, listNamedNetns, namedNetns, type NetnsRef } from '../topology/netns';
import { startAgent } from '../agent/agent';
import { formatDiagnosis } from '../export/diagnosis';
import { pathToJsonLine } from '../export/json';
import { formatPathTable } from '../export/table';
import { formatFlow } from '../flow/spec';
import { advise } from '../probe/advice';
import { localTarget, runDiagnose } from '../session/diagnose';
import { resolveAgents } from '../session/agentClient';
import { connectAgents, remoteTarget, startRemoteFollow, type RemoteCluster } from '../session/remote';
import type { PacketPath } from '../flow/path';
import { readFileSync } from 'node:fs';
import { startFollow, type ReadyEvent } from '../session/follow';
import { viewCluster } from '../session/cluster';
import { API_PORT } from '../session/protocol';
import { readTokenFile } from '../session/token';
import { requireBtf, requireRoot } from './preflight';

const log = (s: string) => process.stderr.write(s + '\n');

interface FlowCommandOptions {
  flow: string; proto?: string; output: 'table' | 'json'; nodes?: string; cni?: string; agents?: string; tokenFile?: string; ca?: string;
}

/** --agents: the cluster as the agents describe it; null to work on this machine's namespaces. */
async function remoteCluster(o: FlowCommandOptions): Promise<RemoteCluster | null> {
  if (o.agents === undefined) {
    if (o.tokenFile !== undefined || o.ca !== undefined) throw usageError('--token-file and --ca go with --agents', 'name the agents with --agents URL,...');
    return null;
  }
  if (o.nodes !== undefined) throw usageError('--nodes and --agents do not go together', 'with --agents each agent watches its own node');
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

function positiveNumber(flag: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`${flag} takes a number of seconds above 0`);
    return n;
  };
}

/** --nodes, else the test cluster's nodes when it is up, else our own namespace (a real node). */
function resolveNodes(list: string | undefined): NetnsRef[] {
  if (list !== undefined) {
    const names = list.split(',').map((s) => s.trim()).filter(Boolean);
    if (names.length === 0) throw usageError('--nodes is empty', 'name network namespaces, e.g. --nodes node1,node2');
    return names.map(namedNetns);
  }
  const tb = testbedStatus();
  return tb ? tb.nodes.map((n) => namedNetns(n.netns)) : [currentNetns()];
}

/** The agent's node: --nodes with one namespace, else where it runs, named after its /run/netns entry if it has one. */
function resolveAgentNode(list: string | undefined): NetnsRef {
  if (list !== undefined) {
    const names = list.split(',').map((s) => s.trim()).filter(Boolean);
    if (names.length !== 1) throw names.length ? agentNodeError(names) : usageError('--nodes is empty', 'name the node\'s network namespace, e.g. --nodes node1');
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
    'start one agent per node, e.g. `nettrace agent --nodes node1` and `nettrace agent --nodes node2`');
}

function nonNegativeInt(flag: string) {
  return (v: string): number => {
    if (!/^\d+$/.test(v)) throw new InvalidArgumentError(`${flag} takes a whole number (0 switches it off)`);
    return Number(v);
  };
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

function checkCni(cni: string): asserts cni is CniMode {
  if (!isCniMode(cni)) {
    throw usageError(`--cni ${cni} is not a mode this testbed builds`, `use one of: ${CNI_MODES.join(', ')}`);
  }
}

function buildProgram(): Command {
  const program = new Command('nettrace')
    .description('Trace packets hop by hop across Kubernetes nodes with eBPF')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });

  /** What every command about one flow takes. */
  const flowCommand = (name: string, description: string) => program.command(name)
    .description(description)
    .requiredOption('--flow <spec>', "the flow: 'SRC[:PORT] -> DST[:PORT]'")
    .addOption(new Option('--proto <proto>', 'tcp, udp or icmp (default: tcp with ports, icmp without)'))
    .addOption(new Option('-o, --output <format>', 'output format').choices(['table', 'json']).default('table'))
    .option('--nodes <netns,...>', 'network namespaces acting as nodes (default: the test cluster, else this host)')
    .addOption(new Option('--cni <mode>', 'the CNI mode, when detecting it from the nodes is not what you want').choices(CNI_MODES))
    .option('--agents <url,...>', 'trace through the agents on the nodes (http(s)://HOST:PORT, or dns://NAME:PORT for every address of a name), from any machine that reaches them')
    .option('--token-file <file>', 'with --agents: the token the agents were given')
    .option('--ca <file>', 'with --agents over https: the CA certificate (PEM) that signed the agents\' certificates');

  flowCommand('follow', 'show each packet of a flow crossing the nine steps between two pods, live')
    .option('--count <n>', 'stop after n packets', positiveInt('--count'))
    .option('--timeout <seconds>', 'stop after this many seconds', positiveNumber('--timeout'))
    .option('--grace <ms>', 'report a path incomplete when its next hop has not come in this time', positiveInt('--grace'), 1000)
    .addOption(new Option('--attach <mechanism>', 'tcx links (kernel 6.6+) or classic tc filters').choices(['tcx', 'tc']).default('tcx'))
    .action(async (o: FlowCommandOptions & { count?: number; timeout?: number; grace: number; attach: 'tcx' | 'tc' }) => {
      const flow = parseFlowSpec(o.flow, o.proto !== undefined ? parseProto(o.proto) : undefined);
      const remote = await remoteCluster(o);
      if (!remote) {
        requireRoot();
        requireBtf();
      }
      // handlers first: a signal that lands while attaching must still detach everything
      let stop: (() => void) | null = null;
      const onSignal = (sig: NodeJS.Signals) => {
        process.exitCode = sig === 'SIGINT' ? 130 : 143;
        if (stop) stop();
      };
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      const events = {
        flow, count: o.count ?? null, timeoutS: o.timeout ?? null, graceMs: o.grace,
        onPath: (p: PacketPath) => process.stdout.write(o.output === 'json' ? pathToJsonLine(p) + '\n' : formatPathTable(p) + '\n'),
        onReady: (r: ReadyEvent) => log(readyLine('following', formatFlow(flow), r)),
        onWarning: (s: string) => log(`warning: ${s}`),
      };
      const session = remote
        ? startRemoteFollow({ ...events, cluster: remote })
        : startFollow({ ...events, cluster: viewCluster(resolveNodes(o.nodes), o.cni as CniMode | undefined), attach: o.attach });
      stop = session.stop;
      if (process.exitCode) stop();
      await session.done;
    });

  flowCommand('diagnose', 'send probes of a flow (or watch it) and say where and why it breaks or slows')
    .option('--passive', 'send nothing: watch the flow\'s real traffic')
    .option('--seconds <s>', 'how long --passive watches', positiveNumber('--seconds'), 5)
    .addOption(new Option('--attach <mechanism>', 'tcx links (kernel 6.6+) or classic tc filters').choices(['tcx', 'tc']).default('tcx'))
    .action(async (o: FlowCommandOptions & { passive?: boolean; seconds: number; attach: 'tcx' | 'tc' }) => {
      const flow = parseFlowSpec(o.flow, o.proto !== undefined ? parseProto(o.proto) : undefined);
      const remote = await remoteCluster(o);
      if (!remote) {
        requireRoot();
        requireBtf();
      }
      const target = remote ? remoteTarget(flow, remote) : localTarget(flow, viewCluster(resolveNodes(o.nodes), o.cni as CniMode | undefined), o.attach);
      const d = await runDiagnose({
        flow, target, passive: !!o.passive, seconds: o.seconds,
        onReady: (r) => log(readyLine('diagnosing', formatFlow(flow), r)),
        onWarning: (s) => log(`warning: ${s}`),
      });
      process.stdout.write(o.output === 'json' ? JSON.stringify(d) + '\n' : formatDiagnosis(flow, d));
    });

  program.command('agent')
    .description('run on a node: per-step latency, drops and retransmits as Prometheus metrics, sampled packets as OTLP traces')
    .option('--nodes <netns>', 'the network namespace acting as this node (default: the one the agent runs in)')
    .option('--metrics-addr <host:port>', 'where /metrics and /healthz listen (no token: keep it off networks strangers reach; NODE_IP:9101 for a Prometheus elsewhere)', '127.0.0.1:9101')
    .option('--otlp-endpoint <url>', 'OTLP/HTTP collector for spans, e.g. http://127.0.0.1:4318 (default: no spans)')
    .option('--sample <n>', '1 in n packets becomes a trace, the same packets on every node (0: none)', nonNegativeInt('--sample'), 1000)
    .option('--latency-every <n>', 'time the hops of 1 in n packets (a power of two): clock reads cost ~30 ns a hop', powerOfTwo('--latency-every'), 8)
    .option('--peers <url,...>', "other nodes' agents (http://HOST:PORT), to time the wire between nodes (step 6); with --token-file, the token is sent to them and required of them")
    .addOption(new Option('--attach <mechanism>', 'tcx links (kernel 6.6+) or classic tc filters').choices(['tcx', 'tc']).default('tcx'))
    .option('--api-addr <host:port>', `where the trace API listens for remote follow/diagnose (default: the node's underlay address, port ${API_PORT})`)
    .option('--token-file <file>', 'the bearer token callers of the trace API must present (without it the trace API is off)')
    .option('--tls-cert <file>', 'serve the trace API over TLS with this certificate (PEM)')
    .option('--tls-key <file>', 'the key of --tls-cert (PEM)')
    .option('--max-sessions <n>', 'trace sessions at once', positiveInt('--max-sessions'), 4)
    .addOption(new Option('--rescan <ms>', 'full rescan of the node\'s devices, besides link events').argParser(positiveInt('--rescan')).default(5000).hideHelp())
    .addOption(new Option('--clock-skew-ms <ms>', 'add this to the agent\'s wall clock: a node whose clock is off, for tests').argParser(skewMs).hideHelp())
    .action(async (o: {
      nodes?: string; metricsAddr: string; otlpEndpoint?: string; sample: number; latencyEvery: number; peers?: string; attach: 'tcx' | 'tc'; rescan: number;
      apiAddr?: string; tokenFile?: string; tlsCert?: string; tlsKey?: string; maxSessions: number; clockSkewMs?: number;
    }) => {
      const metricsAddr = parseListenAddress(o.metricsAddr);
      const apiAddr = o.apiAddr !== undefined ? parseListenAddress(o.apiAddr, '--api-addr') : null;
      if ((o.tlsCert === undefined) !== (o.tlsKey === undefined)) throw usageError('--tls-cert and --tls-key go together', 'give both, or neither for plain HTTP');
      if (o.tokenFile === undefined && (apiAddr || o.tlsCert)) throw usageError('the trace API needs --token-file', 'give the file holding the token callers must present');
      const token = o.tokenFile !== undefined ? readTokenFile(o.tokenFile) : null;
      if (o.otlpEndpoint !== undefined) otlpTracesUrl(o.otlpEndpoint);
      const peers = (o.peers ?? '').split(',').map((s) => s.trim()).filter(Boolean);
      for (const p of peers) {
        if (!/^https?:\/\/[^/\s]+\/?$/.test(p)) throw usageError(`--peers ${p} is not http://HOST:PORT`, "give the other agents' metrics addresses, e.g. http://192.168.1.102:9101");
      }
      requireRoot();
      requireBtf();
      const node = resolveAgentNode(o.nodes);
      let stop: (() => Promise<void>) | null = null;
      let stopping = false;
      const onSignal = () => {
        stopping = true;
        if (stop) void stop().then(() => process.exit());
      };
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      const agent = await startAgent({
        node, metricsAddr, otlpEndpoint: o.otlpEndpoint ?? null, sample: o.sample, latencyEvery: o.latencyEvery, peers, attach: o.attach, rescanMs: o.rescan,
        api: token ? { addr: apiAddr, token, tls: o.tlsCert ? { certFile: o.tlsCert, keyFile: o.tlsKey! } : null, maxSessions: o.maxSessions } : null,
        clockSkewMs: o.clockSkewMs,
        log: (s) => process.stderr.write(s + '\n'),
      });
      stop = agent.stop;
      if (stopping) await stop().then(() => process.exit());
    });

  const testbed = program.command('testbed').description('the built-in two-node test cluster, made of network namespaces');
  testbed.command('up')
    .description('build it (idempotent)')
    .option('--cni <mode>', 'CNI mode', 'flannel-vxlan')
    .option('--prefix <text>', 'prepended to every namespace name', '')
    .option('--pod-mtu <bytes>', 'pod eth0 MTU (default: the mode\'s; 1500 with a tunnel reproduces the seed MTU case)', positiveInt('--pod-mtu'))
    .action((o: { cni: string; prefix: string; podMtu?: number }) => {
      checkCni(o.cni);
      requireRoot();
      const s = testbedUp({ prefix: o.prefix, podMtu: o.podMtu, cni: o.cni });
      process.stdout.write(`testbed up (${s.cni}): ${s.nodes.map((n) => `${n.netns} ${n.ip}`).join(', ')}; pods ${s.pods.map((p) => `${p.netns} ${p.ip}`).join(', ')}\n`);
    });
  testbed.command('down')
    .description('remove it, also after a failed up')
    .option('--prefix <text>', 'prepended to every namespace name', '')
    .action((o: { prefix: string }) => {
      requireRoot();
      const removed = testbedDown(o.prefix);
      process.stdout.write(removed.length ? `testbed down: removed ${removed.join(', ')}\n` : 'testbed down: nothing to remove\n');
    });
  testbed.command('status')
    .description('say whether it is up')
    .option('--prefix <text>', 'prepended to every namespace name', '')
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
    });

  program.command('cleanup')
    .description('remove hooks a killed nettrace left behind (classic tc filters; tcx links go by themselves)')
    .action(() => {
      requireRoot();
      const removed = cleanupEverywhere();
      process.stdout.write(removed.length ? removed.map((r) => `removed ${r.hook} filter on ${r.device} in ${r.netns}\n`).join('') : 'cleanup: nothing left behind\n');
    });
  return program;
}

function fail(thrown: unknown): void {
  detachAllLive();
  const err = advise(thrown);
  if (err instanceof NettraceError) {
    process.stderr.write(err.line() + '\n');
    if (err.detail) process.stderr.write(err.detail.split('\n').map((l) => `  ${l}`).join('\n') + '\n');
    process.exitCode = err.exitCode;
  } else if (err instanceof CommanderError) {
    process.exitCode = err.exitCode === 0 ? 0 : 2;
  } else {
    process.stderr.write(`nettrace: E_INTERNAL: ${(err as Error)?.stack ?? String(err)}; please report this\n`);
    process.exitCode = 1;
  }
}

process.on('uncaughtException', (err) => {
  fail(err);
  process.exit();
});

buildProgram().parseAsync(process.argv).catch(fail);
