// nettrace's command line.
import { Argument, Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { completionScript, SHELLS, type Shell } from './completion';
import { durationOption } from './duration';
import { ErrorCodes, NettraceError, usageError } from '../errors';
import { parseFlowSpec, parseProto } from '../flow/spec';
import { detachAllLive } from '../probe/attach';
import { cleanupEverywhere } from '../probe/cleanup';
import { checkPrefix, testbedDown, testbedStatus, testbedUp } from '../testbed/testbed';
import { CNI_MODES, isCniMode, type CniMode } from '../topology/cni';
import { parseListenAddress } from '../export/http';
import { otlpEndpoint } from '../export/otlpUrl';
import { currentNetns, listNamedNetns, namedNetns, type NetnsRef } from '../topology/netns';
import { startAgent } from '../agent/agent';
import { diagnosisExitCode, formatDiagnosis, VERDICT_EXIT } from '../export/diagnosis';
import { pathToJsonLine } from '../export/json';
import { formatPathTable } from '../export/table';
import { formatFlow } from '../flow/spec';
import { advise } from '../probe/advice';
import { packageVersion } from '../probe/paths';
import { localTarget, runDiagnose } from '../session/diagnose';
import type { Diagnosis } from '../flow/verdict';
import { resolveAgents } from '../session/agentClient';
import { connectAgents, remoteTarget, startRemoteFollow, type RemoteCluster } from '../session/remote';
import type { PacketPath } from '../flow/path';
import { readFileSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { startFollow, type ReadyEvent } from '../session/follow';
import { viewCluster } from '../session/cluster';
import { API_PORT } from '../session/protocol';
import { readTokenFile } from '../session/token';
import { requireBtf, requireRoot } from './preflight';

const log = (s: string) => process.stderr.write(s + '\n');

interface FlowCommandOptions {
  flow: string; proto?: string; output: 'table' | 'json'; netns?: string; nodes?: string; cni?: string; agents?: string; tokenFile?: string; ca?: string;
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

function buildProgram(): Command {
  const program = new Command('nettrace')
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
  const flowCommand = (name: string, description: string) => program.command(name)
    .description(description)
    .requiredOption('--flow <spec>', "the flow: 'SRC[:PORT] -> DST[:PORT]'")
    .addOption(new Option('--proto <proto>', 'tcp, udp or icmp (default: tcp with ports, icmp without)'))
    .addOption(new Option('-o, --output <format>', 'output format').choices(['table', 'json']).default('table'))
    .option('--netns <name,...>', 'network namespaces acting as nodes, when a whole cluster shares one kernel (default: the test cluster, else this host)')
    .addOption(new Option('--nodes <name,...>', 'the old name of --netns').hideHelp())
    .addOption(new Option('--cni <mode>', 'the CNI mode, when detecting it from the nodes is not what you want').choices(CNI_MODES))
    .option('--agents <url,...>', 'trace through the agents on the nodes (http(s)://HOST:PORT, or dns://NAME:PORT for every address of a name), from any machine that reaches them')
    .option('--token-file <file>', 'with --agents: the token the agents were given')
    .option('--ca <file>', 'with --agents over https: the CA certificate (PEM) that signed the agents\' certificates');

  flowCommand('follow', 'show each packet of a flow crossing the nine steps between two pods, live')
    .option('--count <n>', 'stop after n packets', positiveInt('--count'))
    .option('--timeout <duration>', 'stop after this long: 30s, 2m, 1h (a plain number is seconds; at most 24h)', durationOption('--timeout', 's'))
    .addOption(new Option('--grace <duration>', 'report a path incomplete when its next hop has not come in this long; a plain number is milliseconds')
      .argParser(durationOption('--grace', 'ms')).default(1000, '1s'))
    .addOption(new Option('--attach <mechanism>', 'tcx links (kernel 6.6+) or classic tc filters').choices(['tcx', 'tc']).default('tcx'))
    .addHelpText('after', examples(
      ['two packets of an HTTP flow and their replies, as a table', `nettrace follow ${FLOW_EXAMPLE} --count 2`],
      ['every DNS query to a Service for 30 seconds, one JSON line per packet', "nettrace follow --flow '10.244.1.5 -> 10.96.0.10:53' --proto udp --timeout 30s -o json"],
      ['from any machine, through the agents on the nodes', `nettrace follow --agents dns://nettrace-agent.kube-system:9966 --token-file token ${FLOW_EXAMPLE}`],
      ['on network namespaces acting as nodes', `nettrace follow --netns node1,node2 ${FLOW_EXAMPLE}`],
    ))
    .action(async (o: FlowCommandOptions & { count?: number; timeout?: number; grace: number; attach: 'tcx' | 'tc' }) => {
      // handlers first: a signal that lands while connecting or attaching must still detach everything
      let stop: (() => void) | null = null;
      let interrupted = false;
      onStopSignals(() => {
        interrupted = true;
        if (stop) stop();
      });
      const flow = parseFlowSpec(o.flow, o.proto !== undefined ? parseProto(o.proto) : undefined);
      const remote = await remoteCluster(o);
      if (!remote) {
        requireRoot();
        requireBtf();
      }
      const events = {
        flow, count: o.count ?? null, timeoutS: o.timeout ?? null, graceMs: o.grace,
        onPath: (p: PacketPath) => process.stdout.write(o.output === 'json' ? pathToJsonLine(p) + '\n' : formatPathTable(p) + '\n'),
        onReady: (r: ReadyEvent) => log(readyLine('following', formatFlow(flow), r)),
        onWarning: (s: string) => log(`warning: ${s}`),
      };
      const session = remote
        ? startRemoteFollow({ ...events, cluster: remote })
        : startFollow({ ...events, cluster: viewCluster(resolveNodes(netnsList(o)), o.cni as CniMode | undefined), attach: o.attach });
      stop = session.stop;
      if (interrupted) stop();
      await session.done;
    });

  flowCommand('diagnose', `send probes of a flow (or watch it) and say where and why it breaks or slows; exits 0 when healthy, ${VERDICT_EXIT.BROKEN} when broken, ${VERDICT_EXIT.SLOW} when slow`)
    .option('--passive', 'send nothing: watch the flow\'s real traffic')
    .addOption(new Option('--seconds <duration>', 'how long --passive watches: 30s, 2m; a plain number is seconds; at most 24h')
      .argParser(durationOption('--seconds', 's')).default(5, '5s'))
    .addOption(new Option('--attach <mechanism>', 'tcx links (kernel 6.6+) or classic tc filters').choices(['tcx', 'tc']).default('tcx'))
    .addHelpText('after', examples(
      ['ICMP probes and one full-size packet with DF set', "nettrace diagnose --flow '10.244.1.5 -> 10.244.2.8'"],
      ['TCP probes to port 80; one JSON object with the verdict', `nettrace diagnose ${FLOW_EXAMPLE} -o json`],
      ['send nothing: watch the real traffic for 30 seconds', `nettrace diagnose ${FLOW_EXAMPLE} --passive --seconds 30s`],
      ['act on the verdict in a script', `nettrace diagnose ${FLOW_EXAMPLE} >/dev/null; case $? in 0) echo healthy;; 10) echo broken;; 11) echo slow;; esac`],
    ))
    .action(async (o: FlowCommandOptions & { passive?: boolean; seconds: number; attach: 'tcx' | 'tc' }) => {
      // as follow: handlers before anything is attached; the session detaches when the signal aborts it
      const interrupt = new AbortController();
      onStopSignals(() => interrupt.abort());
      const flow = parseFlowSpec(o.flow, o.proto !== undefined ? parseProto(o.proto) : undefined);
      const remote = await remoteCluster(o);
      if (!remote) {
        requireRoot();
        requireBtf();
      }
      const target = remote ? remoteTarget(flow, remote) : localTarget(flow, viewCluster(resolveNodes(netnsList(o)), o.cni as CniMode | undefined), o.attach);
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
      process.stdout.write(o.output === 'json' ? JSON.stringify(d) + '\n' : formatDiagnosis(flow, d));
      process.exitCode = diagnosisExitCode(d);
    });

  program.command('agent')
    .description('run on a node: per-step latency, drops and retransmits as Prometheus metrics, sampled packets as OTLP traces')
    .option('--netns <name>', 'the network namespace acting as this node (default: the one the agent runs in)')
    .addOption(new Option('--nodes <name>', 'the old name of --netns').hideHelp())
    .option('--metrics-addr <host:port>', 'where /metrics and /healthz listen (no token: keep it off networks strangers reach; NODE_IP:9101 for a Prometheus elsewhere)', '127.0.0.1:9101')
    .option('--otlp-endpoint <url>', 'OTLP/HTTP collector for spans, e.g. http://127.0.0.1:4318 (default: OTEL_EXPORTER_OTLP_ENDPOINT, else no spans; OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES name the resource)')
    .option('--sample <n>', '1 in n packets becomes a trace, the same packets on every node (0: none)', nonNegativeInt('--sample'), 1000)
    .option('--latency-every <n>', 'time the hops of 1 in n packets (a power of two): clock reads cost ~30 ns a hop', powerOfTwo('--latency-every'), 8)
    .option('--peers <url,...>', "other nodes' agents (http://HOST:PORT), to time the wire between nodes (step 6); with --token-file, the token is sent to them and required of them")
    .addOption(new Option('--attach <mechanism>', 'tcx links (kernel 6.6+) or classic tc filters').choices(['tcx', 'tc']).default('tcx'))
    .option('--api-addr <host:port>', `where the trace API listens for remote follow/diagnose (default: the node's underlay address, port ${API_PORT})`)
    .option('--token-file <file>', 'the bearer token callers of the trace API must present (without it the trace API is off)')
    .option('--tls-cert <file>', 'serve the trace API over TLS with this certificate (PEM)')
    .option('--tls-key <file>', 'the key of --tls-cert (PEM)')
    .option('--max-sessions <n>', 'trace sessions at once', positiveInt('--max-sessions'), 4)
    .addOption(new Option('--rescan <duration>', 'full rescan of the node\'s devices, besides link events (a plain number is milliseconds)')
      .argParser(durationOption('--rescan', 'ms')).default(5000, '5s').hideHelp())
    .addOption(new Option('--clock-skew-ms <ms>', 'add this to the agent\'s wall clock: a node whose clock is off, for tests').argParser(skewMs).hideHelp())
    .addHelpText('after', examples(
      ['metrics only, on 127.0.0.1:9101', 'nettrace agent'],
      ['on a real node: metrics for a Prometheus elsewhere, spans to a collector, the trace API for follow --agents',
        'nettrace agent --token-file /etc/nettrace/token --metrics-addr 192.168.1.101:9101 --otlp-endpoint http://otel-collector:4318'],
      ['node1 of the test cluster, timing the wire with node2\'s agent', 'nettrace agent --netns node1 --metrics-addr 127.0.0.1:9101 --peers http://127.0.0.1:9102'],
    ))
    .action(async (o: {
      netns?: string; nodes?: string; metricsAddr: string; otlpEndpoint?: string; sample: number; latencyEvery: number; peers?: string; attach: 'tcx' | 'tc'; rescan: number;
      apiAddr?: string; tokenFile?: string; tlsCert?: string; tlsKey?: string; maxSessions: number; clockSkewMs?: number;
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
    .addHelpText('after', examples(
      ['Flannel VXLAN, the default', 'nettrace testbed up'],
      ['Calico with routes learned over BGP', 'nettrace testbed up --cni calico-bgp'],
      ['pods whose MTU does not fit the tunnel (diagnose then says mtu)', 'nettrace testbed up --pod-mtu 1500'],
    ))
    .action((o: { cni: string; prefix: string; podMtu?: number }) => {
      checkCni(o.cni);
      requireRoot();
      const s = testbedUp({ prefix: o.prefix, podMtu: o.podMtu, cni: o.cni });
      process.stdout.write(`testbed up (${s.cni}): ${s.nodes.map((n) => `${n.netns} ${n.ip}`).join(', ')}; pods ${s.pods.map((p) => `${p.netns} ${p.ip}`).join(', ')}\n`);
    });
  testbed.command('down')
    .description('remove it, also after a failed up')
    .option('--prefix <text>', 'prepended to every namespace name (letters, digits, - _ .)', checkPrefix, '')
    .action((o: { prefix: string }) => {
      requireRoot();
      const removed = testbedDown(o.prefix);
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

program.parseAsync(process.argv).catch(fail);
