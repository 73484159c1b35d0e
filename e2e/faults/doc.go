// Package faults is the fault suite of the control plane: it starts five
// real daemons in a cluster in a box (no guests), drives concurrent
// gophercloud clients against random hosts while a nemesis partitions,
// crashes, pauses and kills hosts, records every operation, and checks
// the history: linearizability of per-network registers (porcupine), no
// acknowledged create or delete lost, no duplicate or phantom resources,
// no double allocation of VNIs, IPs, MACs or capacity, and equal state on
// every host after the cluster heals.
//
// It is a test harness only: nothing in the daemon imports it, and it
// reaches the cluster only through the box (processes, namespaces) and
// the public API.
package faults
