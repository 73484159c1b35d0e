package qemu

// The serial console goes to <dir>/console.log, written by QEMU itself (the
// console chardev's logfile, logappend=on; VMs started before the console
// had a socket use chardev file, append=on), so the VM keeps logging while
// peerstack is down or restarting. Typing into it: consolesock.go. The size cap is kept by a goroutine per running VM that
// checks the file every few seconds and, above Config.ConsoleLimit, drops the
// oldest part so the newest half of the limit remains:
//
//   - first choice: fallocate(FALLOC_FL_COLLAPSE_RANGE) on a block-aligned
//     prefix (ext4, xfs). It is atomic against QEMU's O_APPEND writes, so
//     nothing is lost or reordered;
//   - otherwise (tmpfs, overlayfs, nfs): copy the tail, truncate to zero and
//     append the tail again. QEMU's fd is O_APPEND, so its writes land at the
//     new end, but a line written between the truncate and our append lands
//     before the old tail (reordered, not lost).
//
// While peerstack is down nothing trims, so the log can outgrow the limit
// until the VM is recovered; the next trim then cuts it back.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// trimLoop keeps the console log of p under the limit until p exits or the
// driver closes.
func (d *Driver) trimLoop(v *vm, p *proc) {
	t := time.NewTicker(d.trimEvery)
	defer t.Stop()
	for {
		select {
		case <-p.exited:
			return
		case <-d.quit:
			return
		case <-t.C:
			if _, err := trimConsole(v.paths.ConsoleLog(), d.cfg.ConsoleLimit); err != nil && !errors.Is(err, os.ErrNotExist) {
				d.log.Warn("console trim failed", "uuid", v.uuid, "err", err)
			}
		}
	}
}

// trimConsole cuts the file at path down to about limit/2 bytes (its newest
// part) when it is larger than limit. It reports whether it trimmed.
func trimConsole(path string, limit int64) (bool, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return false, err
	}
	size := st.Size()
	if size <= limit {
		return false, nil
	}
	keep := max(limit/2, 1)
	cut := size - keep
	var stfs unix.Statfs_t
	bs := int64(4096)
	if unix.Fstatfs(int(f.Fd()), &stfs) == nil && stfs.Bsize > 0 {
		bs = stfs.Bsize
	}
	if aligned := cut / bs * bs; aligned > 0 {
		err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_COLLAPSE_RANGE, 0, aligned)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) {
			return false, fmt.Errorf("console %s: collapse: %w", path, err)
		}
	}
	// Fallback: copy the tail, truncate, append it again.
	tail := make([]byte, keep)
	n, err := f.ReadAt(tail, cut)
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("console %s: %w", path, err)
	}
	af, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return false, err
	}
	defer af.Close()
	if err := f.Truncate(0); err != nil {
		return false, fmt.Errorf("console %s: %w", path, err)
	}
	if _, err := af.Write(tail[:n]); err != nil {
		return false, fmt.Errorf("console %s: %w", path, err)
	}
	return true, nil
}

// ConsoleLog returns the last maxBytes of the VM's serial console log (all
// of it when maxBytes <= 0). A VM that never wrote anything returns "".
func (d *Driver) ConsoleLog(uuid string, maxBytes int64) (string, error) {
	v, err := d.lookup(uuid)
	if err != nil {
		return "", err
	}
	return readTail(v.paths.ConsoleLog(), maxBytes)
}

func readTail(path string, maxBytes int64) (string, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	off := int64(0)
	if maxBytes > 0 && st.Size() > maxBytes {
		off = st.Size() - maxBytes
	}
	b, err := io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
	if err != nil {
		return "", err
	}
	return string(b), nil
}
