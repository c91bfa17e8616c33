// Probe packets of a flow sent from inside its source pod: a few of the flow's protocol, then
// one full-size packet with DF set (what finds an MTU that is too small on the way).
import { execFile } from 'node:child_process';
import { isIP } from 'node:net';
import type { FlowSpec } from '../flow/spec';

const PROBES = 5;

function inPod(netns: string, cmd: string[]): Promise<void> {
  return new Promise((resolve) => {
    execFile('ip', ['netns', 'exec', netns, ...cmd], { timeout: 10_000 }, () => resolve());
  });
}

/** Never runs a shell on anything but checked numbers and IP addresses. */
export async function sendProbes(podNetns: string, f: FlowSpec, podMtu: number): Promise<void> {
  if (isIP(f.dst) === 0 || !Number.isInteger(f.dport) || !Number.isInteger(podMtu)) throw new Error('sendProbes: unchecked flow');
  const bash = (script: string) => inPod(podNetns, ['timeout', '1', 'bash', '-c', script]);
  if (f.proto === 'icmp') {
    await inPod(podNetns, ['ping', '-c', String(PROBES), '-i', '0.05', '-W', '1', f.dst]);
    await inPod(podNetns, ['ping', '-c', '1', '-W', '1', '-M', 'do', '-s', String(podMtu - 28), f.dst]);
  } else if (f.proto === 'tcp') {
    for (let i = 0; i < PROBES; i++) await bash(`exec 3<>/dev/tcp/${f.dst}/${f.dport}`);
    // a full-size segment: TCP sets DF
    await bash(`exec 3<>/dev/tcp/${f.dst}/${f.dport} && head -c 8000 /dev/zero >&3`);
  } else {
    for (let i = 0; i < PROBES; i++) await bash(`echo probe > /dev/udp/${f.dst}/${f.dport}`);
    await bash(`head -c ${podMtu - 28} /dev/zero > /dev/udp/${f.dst}/${f.dport}`);
  }
}
