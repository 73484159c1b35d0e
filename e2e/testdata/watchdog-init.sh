#!/bin/busybox sh
# /init of the initramfs TestFenceGuardWatchdogSoftdog boots: the real
# `peerstack fence-guard --watchdog /dev/watchdog` against the kernel's
# softdog, in five cases, each printing a CASE line on the console. The
# last one reboots the guest (QEMU runs with -no-reboot, so it exits).
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmpfs /run
insmod /lib/modules/watchdog.ko && insmod /lib/modules/softdog.ko soft_margin=60 && echo WD-LOADED $(ls /dev/watchdog*)
up() { cut -d' ' -f1 /proc/uptime; }
deadline() { awk -v s="$1" '{printf "%.0f", ($1+s)*1000000000}' /proc/uptime; }
( while :; do echo "TICK $(up)"; sleep 0.5; done ) &
# A stand-in VM: a shell whose command line names an instance id, as a
# QEMU's does (the guard counts a pid as the VM only then).
ID=0b5d1c1e-4f6a-4c1b-9a57-2f1d3e4c5b6a
vm() { sh -c 'sleep 1234567; :' "$ID" & VM=$!; }
guard() { /bin/peerstack fence-guard --heartbeat /run/hb/hb.json --lock /run/hb/hb.lock --watchdog /dev/watchdog --log-level info >/run/guard.log 2>&1 & }
# 1. A valid lease, W = 2 s: the guard sets the timeout and pets.
mkdir -p /run/hb
echo "{\"deadline_boot_ns\":$(deadline 3600),\"deadline_mono_ns\":1,\"vms\":[],\"watchdog_ns\":2000000000}" > /run/hb/hb.json
guard; sleep 4
echo "CASE1 timeout=$(cat /sys/class/watchdog/watchdog0/timeout) state=$(cat /sys/class/watchdog/watchdog0/state) alive-after-4s"
# 2. The lease lapses with a live 'VM': the guard kills it and keeps petting.
vm
echo "{\"deadline_boot_ns\":$(deadline 2),\"deadline_mono_ns\":1,\"vms\":[{\"id\":\"$ID\",\"pid\":$VM}],\"watchdog_ns\":2000000000}" > /run/hb/hb.json
sleep 6
if kill -0 $VM 2>/dev/null; then echo "CASE2 VM-ALIVE"; else echo "CASE2 vm-killed, host alive 4s past the lapse (W=2s)"; fi
# 3. Clean exit: the guard writes 'V'; no reboot.
rm -rf /run/hb; sleep 2
echo "CASE3 guard gone: $(pidof peerstack || echo none), state=$(cat /sys/class/watchdog/watchdog0/state)"
sleep 5; echo "CASE3 alive 5s after the clean exit"
# 5. SIGTERM (system shutdown): the guard keeps guarding while a VM it
# lists lives, then disarms and exits once it is gone; no reboot.
mkdir -p /run/hb
vm
echo "{\"deadline_boot_ns\":$(deadline 3600),\"deadline_mono_ns\":1,\"vms\":[{\"id\":\"$ID\",\"pid\":$VM}],\"watchdog_ns\":2000000000}" > /run/hb/hb.json
guard; sleep 3
echo "CASE5 VM $VM, guard $(cat /run/hb/hb.json.pid)"; kill -TERM $(cat /run/hb/hb.json.pid); sleep 4
echo "CASE5 after SIGTERM with a VM alive: guard $(pidof peerstack >/dev/null && echo running || echo gone), state=$(cat /sys/class/watchdog/watchdog0/state)"
kill -9 $VM; sleep 2
echo "CASE5 VM gone: guard $(pidof peerstack >/dev/null && echo running || echo gone), state=$(cat /sys/class/watchdog/watchdog0/state)"
sleep 5; echo "CASE5 alive 5s after the guard ended"
sed 's/^/CASE5 guard: /' /run/guard.log
rm -rf /run/hb
# 4. The guard SIGKILLed with the lease valid: the host reboots.
mkdir -p /run/hb
echo "{\"deadline_boot_ns\":$(deadline 3600),\"deadline_mono_ns\":1,\"vms\":[],\"watchdog_ns\":2000000000}" > /run/hb/hb.json
guard; sleep 3
echo "CASE4 timeout=$(cat /sys/class/watchdog/watchdog0/timeout) state=$(cat /sys/class/watchdog/watchdog0/state); SIGKILL guard at $(up)"
kill -9 $(cat /run/hb/hb.json.pid)
sleep 30
echo "CASE4 NOT-REBOOTED"
cat /run/guard.log
poweroff -f
