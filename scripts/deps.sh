#!/usr/bin/env bash
# Installs what nettrace needs to build and test on Debian; quick when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

# prometheus: the server and promtool, for the agent and alert-rule tests; bird2: BGP in calico-bgp; zsh: the completion test; unbound: the test cluster's DNS;
# tshark, tcpdump: read back what follow -w writes (pcapng tests)
APT_PACKAGES=(clang llvm libbpf-dev libbpf1 bpftool iproute2 iputils-ping iperf3 iptables nftables ethtool curl procps python3 util-linux openssl prometheus bird2 zsh tshark tcpdump containerd runc containernetworking-plugins libc6-dev unbound)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "deps: missing Debian packages: ${missing[*]}; install them as root (apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "  APT   ${missing[*]}"
  # wireshark-common asks whether non-root users may capture: answer no before it asks (no dumpcap setuid)
  echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm ci only when the lock file changed since the last install
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "  NPM   ci"
  npm ci --no-audit --no-fund --loglevel=error
fi
