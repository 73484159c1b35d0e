package faults

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/volumeattach"
)

// The volume operations (with NFS storage only: the volumes live on the
// NAS, so the nfs nemesis has something to stop).
const (
	opVolCreate = "vcreate" // POST a 1 GB volume with a unique name
	opVolDelete = "vdelete" // DELETE a volume this client created
	opAttach    = "vattach" // attach one of this client's volumes to an HA server (with guests)
	opDetach    = "vdetach" // detach a volume this client attached
)

// transitional are the volume statuses a volume passes through: none may
// remain once the faults are healed and a grace period has passed (a
// status with no way out would need an operator).
var transitional = []string{"creating", "deleting", "attaching", "detaching", "extending", "reserved",
	"downloading", "uploading", "backing-up", "restoring-backup", "retyping", "maintenance"}

// volumeGrace is how long after the heal volumes may still be settling:
// an NFS operation stuck on the stopped server gives up after 30 s.
const volumeGrace = 2 * time.Minute

// attachment is a volume a client attached to a server.
type attachment struct{ vol, server string }

// maxVolumes is how many volumes a client keeps before it deletes one.
const maxVolumes = 3

// volumeOp picks a volume operation for client c into op, or returns
// false to let it pick another kind (called only with volumes on: it
// draws from c.rnd).
func (c *client) volumeOp(op *Op) bool {
	if c.rnd.IntN(100) >= 8 {
		return false
	}
	if servers := c.w.servers; len(servers) > 0 && c.rnd.IntN(3) == 0 {
		// At most one attached per client: a tiny guest has few slots.
		switch {
		case len(c.att) > 0:
			op.Kind, op.ID, op.Key = opDetach, c.att[0].vol, c.att[0].server
			return true
		case len(c.vols) > 0:
			op.Kind, op.ID, op.Key = opAttach, c.vols[c.rnd.IntN(len(c.vols))], servers[c.rnd.IntN(len(servers))]
			return true
		}
	}
	if len(c.vols) >= maxVolumes || (len(c.vols) > 0 && c.rnd.IntN(3) == 0) {
		op.Kind, op.ID = opVolDelete, c.vols[c.rnd.IntN(len(c.vols))]
	} else {
		op.Kind, op.Key = opVolCreate, fmt.Sprintf("%s-v%d-%d", c.w.prefix, c.id, c.n)
	}
	return true
}

// doVolume sends a volume operation.
func doVolume(ctx context.Context, hc *hostClient, op *Op) error {
	switch op.Kind {
	case opVolCreate:
		v, err := volumes.Create(ctx, hc.vol, volumes.CreateOpts{Name: op.Key, Size: 1}, nil).Extract()
		if err == nil {
			op.ID, op.Got = v.ID, v.Status
		}
		return err
	case opVolDelete:
		return volumes.Delete(ctx, hc.vol, op.ID, nil).ExtractErr()
	case opAttach:
		_, err := volumeattach.Create(ctx, hc.comp, op.Key, volumeattach.CreateOpts{VolumeID: op.ID}).Extract()
		return err
	case opDetach:
		return volumeattach.Delete(ctx, hc.comp, op.Key, op.ID).ExtractErr()
	}
	return fmt.Errorf("unknown volume op %q", op.Kind)
}

// afterVolume keeps the client's list of volumes up to date.
func (c *client) afterVolume(op Op) {
	switch {
	case op.Kind == opVolCreate && op.Outcome == outOK:
		c.vols = append(c.vols, op.ID)
	case op.Kind == opVolDelete && op.Outcome != outFail:
		c.vols = removeString(c.vols, op.ID)
	case op.Kind == opAttach && op.Outcome == outOK:
		c.att = append(c.att, attachment{vol: op.ID, server: op.Key})
	case op.Kind == opDetach && (op.Outcome != outFail || op.Status == 404):
		// Detached, maybe detached, or not attached at all (the attach
		// failed after its answer).
		c.att = c.att[1:]
	}
}

// volumeCheck waits (volumeGrace at most) until no volume of the run is
// in a transitional status, then judges the volumes against the history.
// It returns the violations and a summary line.
func volumeCheck(ctx context.Context, w *workload, ops []Op) ([]string, string) {
	t0 := time.Now()
	var vols map[string]volumes.Volume
	var err error
	first := -1 // transitional at the first listing
	for {
		vols, err = listVolumes(ctx, w)
		if err == nil {
			n := len(stuckVolumes(vols, w.prefix))
			if first < 0 {
				first = n
			}
			if n == 0 {
				break
			}
		}
		if time.Since(t0) > volumeGrace {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
		if ctx.Err() != nil {
			break
		}
	}
	if vols == nil {
		return []string{fmt.Sprintf("volumes after heal: no host listed them: %v", err)}, "volumes: not listed\n"
	}
	bad, created, errored := judgeVolumes(ops, vols, w.prefix, len(w.servers) > 0)
	byStatus := map[string]int{}
	for _, v := range vols {
		if strings.HasPrefix(v.Name, w.prefix+"-v") {
			byStatus[v.Status]++
		}
	}
	var st []string
	for s, k := range byStatus {
		st = append(st, fmt.Sprintf("%s %d", s, k))
	}
	sort.Strings(st)
	sum := fmt.Sprintf("volumes (acknowledged creates exist, deletes gone, none transitional %s after heal): %d violations; %d acknowledged creates (%d now in error); %d transitional when first listed after heal, %d %.1fs later; now: %s\n",
		volumeGrace, len(bad), created, errored, max(first, 0), len(stuckVolumes(vols, w.prefix)), time.Since(t0).Seconds(), strings.Join(st, ", "))
	return bad, sum
}

// stuckVolumes describes the run's volumes (named prefix-v…) that are in
// a transitional status, sorted.
func stuckVolumes(vols map[string]volumes.Volume, prefix string) []string {
	var stuck []string
	for _, v := range vols {
		if strings.HasPrefix(v.Name, prefix+"-v") && slices.Contains(transitional, v.Status) {
			stuck = append(stuck, fmt.Sprintf("%s (%s) %s since %s", v.Name, v.ID, v.Status, v.UpdatedAt.Format(time.TimeOnly)))
		}
	}
	sort.Strings(stuck)
	return stuck
}

// judgeVolumes checks the volumes after the heal against the history:
// none in a transitional status, every acknowledged create there unless
// a delete of it was sent, every acknowledged delete gone (or failed as
// error_deleting: a delete is carried out after its answer, and may fail).
// It also counts the acknowledged creates and those now in error. A run
// with no acknowledged create, or (servers: HA servers to attach to) no
// acknowledged attach, proved nothing about them: that is a violation too.
func judgeVolumes(ops []Op, vols map[string]volumes.Volume, prefix string, servers bool) (bad []string, created, errored int) {
	attached := 0
	for _, s := range stuckVolumes(vols, prefix) {
		bad = append(bad, fmt.Sprintf("volume stuck in a transitional status %s after the heal: %s", volumeGrace, s))
	}
	deleted := map[string]bool{}
	for _, op := range ops {
		if op.Kind == opVolDelete && op.Outcome != outFail {
			deleted[op.ID] = true
		}
	}
	for _, op := range ops {
		switch {
		case op.Kind == opVolCreate && op.Outcome == outOK:
			created++
			if v, ok := vols[op.ID]; !ok && !deleted[op.ID] {
				bad = append(bad, fmt.Sprintf("lost create: volume %s (%s) acknowledged by h%d (op %d) is gone", op.Key, op.ID, op.Host, op.Seq))
			} else if ok && v.Status == "error" {
				errored++
			}
		case op.Kind == opAttach && op.Outcome == outOK:
			attached++
		case op.Kind == opVolDelete && op.Outcome == outOK:
			if v, ok := vols[op.ID]; ok && !slices.Contains(transitional, v.Status) && v.Status != "error_deleting" {
				bad = append(bad, fmt.Sprintf("lost delete: volume %s deleted by h%d (op %d) is still %s", op.ID, op.Host, op.Seq, v.Status))
			}
		}
	}
	if created == 0 {
		bad = append(bad, "no volume create was acknowledged: the volumes were never tested")
	}
	if servers && attached == 0 {
		bad = append(bad, "no volume attach was acknowledged: attaching to the HA servers was never tested")
	}
	return bad, created, errored
}

// listVolumes lists the volumes through the first host that answers.
func listVolumes(ctx context.Context, w *workload) (map[string]volumes.Volume, error) {
	var lastErr error
	for _, c := range w.cl {
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		pages, err := volumes.List(c.vol, volumes.ListOpts{}).AllPages(lctx)
		var list []volumes.Volume
		if err == nil {
			list, err = volumes.ExtractVolumes(pages)
		}
		cancel()
		if err != nil {
			lastErr = fmt.Errorf("list volumes at %s: %w", c.name, err)
			continue
		}
		out := map[string]volumes.Volume{}
		for _, v := range list {
			out[v.ID] = v
		}
		return out, nil
	}
	return nil, lastErr
}
