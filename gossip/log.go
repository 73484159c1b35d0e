package gossip

import (
	"log/slog"
	"strings"
)

// logWriter routes memberlist's log.Logger output into slog at debug
// level, keeping memberlist's own level tag as an attribute.
type logWriter struct{ log *slog.Logger }

func (w *logWriter) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\r\n")
	level := ""
	if rest, ok := strings.CutPrefix(line, "["); ok {
		if tag, msg, ok := strings.Cut(rest, "] "); ok {
			level, line = tag, msg
		}
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	w.log.Debug(line, "memberlist_level", level)
	return len(p), nil
}
