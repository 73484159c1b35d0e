package dashboard

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/peerstack/peerstack/rest"
)

// EventsPath streams Server-Sent Events to a logged-in page: a "change"
// event (its data the state's index) whenever the replicated state moves
// on, so the views redraw at once instead of on a timer.
const EventsPath = "/dashboard/events"

// eventsKeepAlive is how often an idle stream sends a comment line, well
// inside the API's idle write limit and the usual proxy timeouts.
const eventsKeepAlive = 15 * time.Second

// maxEventStreams bounds the open streams of one host: each holds a
// goroutine and a ticker.
const maxEventStreams = 512

// events answers GET /dashboard/events for a valid token (the session
// cookie, turned into X-Auth-Token by Wrap). The stream carries only the
// state's index: what changed is read through the API with the caller's
// own rights.
func (d *Dashboard) events(c *rest.Ctx) (any, error) {
	if d.streams.Add(1) > maxEventStreams {
		d.streams.Add(-1)
		return nil, rest.Unavailable("Too many open event streams; try again later.")
	}
	noTimeouts(c.W)
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(c.Context())
	go func() {
		defer d.streams.Add(-1)
		pw.CloseWithError(d.stream(ctx, pw))
	}()
	return &rest.Response{
		Header: http.Header{
			"Content-Type":      {"text/event-stream"},
			"Cache-Control":     {"no-store"},
			"X-Accel-Buffering": {"no"},
		},
		Raw: pr,
		Close: func() {
			cancel()
			pr.Close()
		},
	}, nil
}

// stream writes the events until ctx ends or a write fails.
func (d *Dashboard) stream(ctx context.Context, w io.Writer) error {
	last := d.b.State().Index
	if _, err := fmt.Fprintf(w, "retry: 2000\nevent: change\ndata: %d\n\n", last); err != nil {
		return err
	}
	tick := time.NewTicker(d.eventPoll)
	defer tick.Stop()
	idle := time.Now()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		if idx := d.b.State().Index; idx != last {
			last = idx
			if _, err := fmt.Fprintf(w, "event: change\ndata: %d\n\n", idx); err != nil {
				return err
			}
			idle = time.Now()
		} else if time.Since(idle) >= eventsKeepAlive {
			if _, err := io.WriteString(w, ": keep-alive\n\n"); err != nil {
				return err
			}
			idle = time.Now()
		}
	}
}
