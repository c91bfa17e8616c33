#!/usr/bin/env bash
# make demo: the two-node test cluster, an HTTP request from pod A to pod B, and its path traced.
set -euo pipefail
cd "$(dirname "$0")/.."
NT=bin/nettrace
POD_A=10.244.1.5
POD_B=10.244.2.8
out=$(mktemp) err=$(mktemp)
server=""
follower=""
cleanup() {
  [ -n "$follower" ] && kill "$follower" 2>/dev/null || true
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  $NT testbed down >/dev/null 2>&1 || true
  rm -f "$out" "$err"
}
trap cleanup EXIT INT TERM

$NT testbed up --cni flannel-vxlan
ip netns exec pod-b python3 -m http.server 80 --bind "$POD_B" >/dev/null 2>&1 &
server=$!
sleep 1

echo "\$ nettrace follow --flow '$POD_A -> $POD_B:80' --proto tcp --count 2"
$NT follow --flow "$POD_A -> $POD_B:80" --proto tcp --count 2 --timeout 10 >"$out" 2>"$err" &
follower=$!
for _ in $(seq 100); do grep -q '^ready:' "$err" && break; sleep 0.1; done
grep -q '^ready:' "$err" || { cat "$err" >&2; exit 1; }
echo "\$ ip netns exec pod-a curl http://$POD_B/    # in another terminal"
ip netns exec pod-a curl -sS -o /dev/null -w "  HTTP %{http_code} in %{time_total}s\n" "http://$POD_B/"
wait "$follower"
follower=""
echo
cat "$out"
grep -v '^ready:' "$err" >&2 || true
