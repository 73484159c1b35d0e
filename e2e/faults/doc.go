// Package faults is the fault suite: it starts five real daemons in a
// cluster in a box with its NAS, drives concurrent gophercloud clients
// against random hosts while a nemesis partitions, crashes, pauses and
// kills hosts, shifts their clocks, drops or delays (with jitter) a share
// of their packets and stops the NFS server, records every operation, and
// checks the history:
// linearizability of per-network registers (porcupine), no acknowledged
// create or delete lost (networks, ports, volumes), no duplicate or
// phantom resources, no double allocation of VNIs, IPs, MACs or capacity,
// no volume left in a transitional status, equal state on every host
// after the cluster heals, and a full reconcile on every host finding
// nothing to change. Optionally HA servers run throughout: never two
// QEMUs of one server, one writer at a time on each boot disk.
//
// It is a test harness only: nothing in the daemon imports it, and it
// reaches the cluster only through the box (processes, namespaces) and
// the public API.
package faults
