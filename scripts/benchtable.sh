#!/usr/bin/env bash
# benchtable.sh: run the control-plane benchmarks (real processes where
# users meet them that way) and print their rows as one table: what,
# figure, target, baseline measured in the same run, ratio. The security
# group row runs five daemons in network namespaces: as root only (it is
# skipped otherwise).
set -euo pipefail
GO=${GO:-go}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
$GO test -run '^$' -bench 'BenchmarkJoin$|BenchmarkWrites$|BenchmarkProcessCluster$|BenchmarkProcessClusterState$|BenchmarkFailoverUnderLoad$|BenchmarkSecGroupRuleEnforced$' -benchtime 1x -timeout 30m ./e2e | tee "$out" >/dev/null
$GO test -run '^$' -bench 'BenchmarkPlaceThroughRaft/throughput' -benchtime 1x -timeout 30m ./node/nodetest | tee -a "$out" >/dev/null
# A real guest booted on a host that must first fetch its image from a
# peer, against bare QEMU plus a plain copy of the image (as root).
$GO test -run '^$' -bench 'BenchmarkQEMUBootImageFromPeer' -benchtime 1x -timeout 30m ./node/nodetest | tee -a "$out" >/dev/null
# Routing (as root, in network namespaces; iperf3 for the throughput).
$GO test -run '^$' -bench 'BenchmarkFloatingIPScale' -benchtime 200x -timeout 30m ./hv/router | tee -a "$out" >/dev/null
$GO test -run '^$' -bench 'BenchmarkThroughput' -benchtime 5x -timeout 30m ./hv/router | tee -a "$out" >/dev/null
printf 'what\tfigure\ttarget\tbaseline (same run)\tratio\n' >"$out.rows"
grep 'BENCHROW' "$out" | sed 's/^.*BENCHROW/BENCHROW/' | cut -f2- >>"$out.rows"
column -t -s "$(printf '\t')" "$out.rows"
rm -f "$out.rows"
