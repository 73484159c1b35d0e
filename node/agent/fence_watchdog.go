package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// The watchdog is the fence's last resort (docs/ha.md), for when the
// daemon and the guard are both dead while the host's QEMUs run on: a
// Linux watchdog device (/dev/watchdog: a hardware timer, or the kernel's
// softdog) that reboots the host unless it is written to within its
// timeout. Only the guard writes to it ("pets" it):
//
//   - while the lease is valid: now ≤ the heartbeat's deadline;
//   - past the deadline, only once none of the VMs the heartbeat lists
//     is alive any more (the guard has killed them), so a host cut off
//     from the cluster loses its HA VMs but does not reboot;
//   - when there is nothing to guard (no heartbeat file).
//
// With a watchdog of period W the daemon fences at T_fence − W after a
// renewal instead of T_fence (FenceConfig.Watchdog) and writes that
// deadline: the last pet is at the deadline at the latest, so a guard
// that dies reboots the host by T_fence after the renewal, which is what
// the leader counts on. The guard sets the device's timeout to the W the
// heartbeat names before it pets against that heartbeat's deadline. On a
// clean exit it writes the magic 'V' before closing, which disarms the
// device; a guard killed (SIGKILL) leaves it armed.

// Watchdog is a watchdog device as the guard uses it.
type Watchdog interface {
	// SetTimeout asks for a timeout and returns the one the device took
	// (devices count in whole seconds and may round).
	SetTimeout(d time.Duration) (time.Duration, error)
	// Pet restarts the device's timer.
	Pet() error
	// Disarm stops the device (the magic close) and closes it.
	Disarm() error
}

// MinWatchdog is the shortest watchdog timeout the fence uses. A guard
// that dies is started again by the daemon (hostfail's keepGuard checks
// for it at most every MinWatchdog/2) and pets again at once: the timeout
// must outlast that, or a guard's crash reboots a healthy host.
const MinWatchdog = time.Second

// WatchdogPeriod is the watchdog timeout W the fence uses with T_fence t
// when the device may take up to limit (0: no watchdog): at most half of
// t, in whole seconds, at least MinWatchdog.
func WatchdogPeriod(t, limit time.Duration) time.Duration {
	if limit <= 0 {
		return 0
	}
	return max(MinWatchdog, min(limit, t/2).Truncate(time.Second))
}

// DeviceWatchdog is a Linux watchdog device (/dev/watchdog, softdog or
// hardware). Opening it arms it.
type DeviceWatchdog struct {
	f *os.File
}

// OpenWatchdog opens (and so arms) the watchdog device at path.
func OpenWatchdog(path string) (*DeviceWatchdog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("watchdog: %w", err)
	}
	return &DeviceWatchdog{f: f}, nil
}

// SetTimeout sets the device's timeout (WDIOC_SETTIMEOUT, whole seconds,
// rounded up) and reads back the one it took (WDIOC_GETTIMEOUT). A
// device whose timeout is fixed refuses the first; its fixed timeout is
// returned then.
func (w *DeviceWatchdog) SetTimeout(d time.Duration) (time.Duration, error) {
	fd := int(w.f.Fd())
	secs := int((d + time.Second - 1) / time.Second)
	setErr := unix.IoctlSetPointerInt(fd, unix.WDIOC_SETTIMEOUT, secs)
	got, err := unix.IoctlGetInt(fd, unix.WDIOC_GETTIMEOUT)
	if err != nil {
		return 0, fmt.Errorf("watchdog %s: set timeout %ds: %w", w.f.Name(), secs, errors.Join(setErr, err))
	}
	return time.Duration(got) * time.Second, nil
}

// Pet writes one byte other than 'V' (which would allow a disarming
// close).
func (w *DeviceWatchdog) Pet() error {
	if _, err := w.f.Write([]byte{'.'}); err != nil {
		return fmt.Errorf("watchdog %s: %w", w.f.Name(), err)
	}
	return nil
}

// Disarm writes the magic 'V' and closes the device. A kernel built with
// nowayout keeps the timer running anyway.
func (w *DeviceWatchdog) Disarm() error {
	_, err := w.f.Write([]byte{'V'})
	return errors.Join(err, w.f.Close())
}

// watchdogTender pets the guard's watchdog by the verdicts of its checks.
type watchdogTender struct {
	dev Watchdog // nil: no watchdog
	log *slog.Logger
	set time.Duration // the timeout set on the device (0: its own)
	pet bool          // the last verdict: petting
	// inEffect, when set, is told the timeout the device took after each
	// setting (GuardConfig.WatchdogInEffect).
	inEffect func(time.Duration)
}

// tend acts on one check: sets the timeout the heartbeat names (only
// while petting is allowed: setting it restarts the timer) and pets when
// the verdict allows it; an unreadable heartbeat keeps the last verdict.
func (w *watchdogTender) tend(v guardVerdict) {
	if w.dev == nil {
		return
	}
	if v.read {
		if w.pet && !v.safe {
			w.log.Error("fence guard: the lease lapsed and an HA VM is still alive; no longer petting the watchdog: the host reboots unless the VMs die first",
				"watchdog_timeout", w.set)
		} else if !w.pet && v.safe {
			w.log.Info("fence guard: petting the watchdog again")
		}
		w.pet = v.safe
	}
	if !w.pet {
		return
	}
	if v.read && v.watchdog > 0 && v.watchdog != w.set {
		got, err := w.dev.SetTimeout(v.watchdog)
		switch {
		case err != nil:
			// Not asked again for this timeout: the device keeps its own.
			w.set = v.watchdog
			w.log.Error("fence guard: set the watchdog's timeout; it keeps its own", "want", v.watchdog, "err", err)
		case got > v.watchdog:
			// Published: the daemon fences that much earlier from its
			// next renewal on, and names it in the heartbeat.
			w.set = v.watchdog
			w.log.Warn("fence guard: the watchdog took a longer timeout than asked; the fence counts with it from the next renewal",
				"want", v.watchdog, "got", got)
		default:
			w.set = v.watchdog
			w.log.Info("fence guard: watchdog timeout set", "timeout", got)
		}
		if err == nil && w.inEffect != nil {
			w.inEffect(got)
		}
	}
	if err := w.dev.Pet(); err != nil {
		w.log.Error("fence guard: pet the watchdog", "err", err)
	}
}

// disarm stops the watchdog at a clean exit of the guard.
func (w *watchdogTender) disarm() {
	if w.dev == nil {
		return
	}
	if err := w.dev.Disarm(); err != nil {
		w.log.Error("fence guard: disarm the watchdog", "err", err)
		return
	}
	w.log.Info("fence guard: watchdog disarmed")
}
