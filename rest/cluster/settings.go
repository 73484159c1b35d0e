package cluster

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// Settings is the cluster's runtime settings as GET and PATCH
// /cluster/v1/settings answer them and `peerstack settings show -f json`
// prints them. Values are effective ones: defaults filled in.
type Settings struct {
	Storage        string   `json:"storage"`        // nfs://server/export[/path], or "" for a local directory per host
	StorageType    string   `json:"storage_type"`   // nfs or local
	FormerStorage  []string `json:"former_storage"` // earlier nfs:// backends, most recent first
	ImageCopies    int      `json:"image_copies"`
	ImageSizeLimit int64    `json:"image_size_limit"` // bytes
	// Quotas are the default quota limits an admin set for the cluster
	// (resources not named use their built-in defaults; docs/limits.md).
	Quotas map[string]int64 `json:"quotas,omitempty"`
	// FenceTimeout is T_fence in seconds as set (absent: the default,
	// 10 s); HADisabled turns automatic restart of a failed host's
	// servers off (docs/ha.md).
	FenceTimeout float64 `json:"fence_timeout,omitempty"`
	HADisabled   bool    `json:"ha_disabled,omitempty"`
}

// SettingsBackend is the daemon side of the settings API.
type SettingsBackend interface {
	rest.Backend
	// CheckStorage proves from this host that a storage backend
	// (nfs://…) is reachable and writable; its error says why not.
	CheckStorage(ctx context.Context, storage string) error
}

// storageCheckTimeout bounds the reachability check of a new storage
// backend (an address that drops packets would otherwise hang the call).
const storageCheckTimeout = 30 * time.Second

// SettingsService returns the /cluster/v1/settings routes: any
// authenticated user reads them, only admins change them.
func SettingsService(b SettingsBackend) rest.Service {
	h := &settingsHandlers{b: b}
	return rest.Service{
		Prefix: "",
		Errors: rest.KeystoneErrors,
		Routes: []rest.Route{
			{Method: "GET", Path: "/cluster/v1/settings", Auth: rest.Token, Handler: h.show},
			{Method: "PATCH", Path: "/cluster/v1/settings", Auth: rest.Token, Handler: h.update},
		},
	}
}

type settingsHandlers struct{ b SettingsBackend }

func (h *settingsHandlers) show(c *rest.Ctx) (any, error) {
	// The storage URL and limits are for cloud administrators only.
	if err := rest.Check(h.b, c, rest.Admin, "", false, "settings"); err != nil {
		return nil, err
	}
	return h.view()
}

func (h *settingsHandlers) view() (any, error) {
	cfg, ok := h.b.State().Cluster()
	if !ok {
		return nil, rest.Unavailable("The cluster is not bootstrapped yet.")
	}
	return map[string]any{"settings": SettingsOf(&cfg.Settings)}, nil
}

// SettingsOf is the API view of the state's settings.
func SettingsOf(s *statedb.Settings) Settings {
	former := slices.Clone(s.FormerStorage)
	if former == nil {
		former = []string{}
	}
	return Settings{
		Storage: s.Storage, StorageType: statedb.VolumeBackendType(s.Storage), FormerStorage: former,
		ImageCopies: s.EffectiveImageCopies(), ImageSizeLimit: s.EffectiveImageSizeLimit(),
		FenceTimeout: s.FenceTimeout.Seconds(), HADisabled: s.HADisabled,
		Quotas: maps.Clone(s.Quotas),
	}
}

// update applies a patch of settings: only the fields present change. A
// new NFS backend must be reachable and writable from this host first.
func (h *settingsHandlers) update(c *rest.Ctx) (any, error) {
	if err := rest.Check(h.b, c, rest.Admin, "", false, "settings"); err != nil {
		return nil, err
	}
	var raw map[string]json.RawMessage
	if err := c.Decode(&raw); err != nil {
		return nil, err
	}
	quotas, err := decodeQuotaDefaults(raw)
	if err != nil {
		return nil, err
	}
	delete(raw, "quotas")
	patch, err := DecodeSettingsPatch(raw)
	if err != nil {
		return nil, err
	}
	cfg, ok := h.b.State().Cluster()
	if !ok {
		return nil, rest.Unavailable("The cluster is not bootstrapped yet.")
	}
	if patch.FenceTimeout != nil || patch.HADisabled != nil {
		// Refused before anything (quotas, storage) is written.
		if err := statedb.Commands().Gate(h.b.State(), statedb.CmdUpdateHASettings); err != nil {
			return nil, err
		}
	}
	if patch.Storage != nil && *patch.Storage != "" && *patch.Storage != cfg.Settings.Storage {
		ctx, cancel := context.WithTimeout(c.Context(), storageCheckTimeout)
		err := h.b.CheckStorage(ctx, *patch.Storage)
		cancel()
		if err != nil {
			return nil, rest.BadRequest("Invalid storage %s: %v", *patch.Storage, err)
		}
	}
	if len(quotas) > 0 {
		if _, err := rest.Propose(c.Context(), h.b, statedb.CmdSetDefaultQuotas, statedb.SetQuotasCmd{Limits: quotas}); err != nil {
			return nil, err
		}
	}
	if patch != (statedb.UpdateSettingsCmd{}) {
		// fence_timeout and ha_disabled ride on their own command, refused
		// (409) while a host runs a release that would apply them
		// differently; the whole patch goes with them, so it stays one
		// change. Other settings keep the command every release knows.
		cmd := statedb.CmdUpdateSettings
		if patch.FenceTimeout != nil || patch.HADisabled != nil {
			cmd = statedb.CmdUpdateHASettings
		}
		if _, err := rest.Propose(c.Context(), h.b, cmd, patch); err != nil {
			return nil, err
		}
	}
	return h.view()
}

// DecodeSettingsPatch turns a PATCH body's fields into the command's
// patch: storage (a string, "" = local), image_copies (an integer >= 1)
// and image_size_limit (bytes, an integer >= 0; 0 = the default). Unknown
// fields and wrong types are 400s; the state machine checks the rest.
func DecodeSettingsPatch(raw map[string]json.RawMessage) (statedb.UpdateSettingsCmd, error) {
	var p statedb.UpdateSettingsCmd
	for _, k := range sortedKeys(raw) {
		v := raw[k]
		if string(v) == "null" {
			return p, rest.BadRequest("Invalid setting %s: null is not a value; leave the field out to keep it.", k)
		}
		switch k {
		case "storage":
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				return p, rest.BadRequest("Invalid setting storage: want a string, nfs://server/export[/path] or \"\" for local storage.")
			}
			s = strings.TrimSpace(s)
			if s != "" {
				if err := statedb.CheckStorageURL(s); err != nil {
					return p, rest.BadRequest("Invalid setting %v", err)
				}
				s = strings.TrimRight(s, "/")
			}
			p.Storage = &s
		case "image_copies":
			var n int
			if err := json.Unmarshal(v, &n); err != nil || n < 1 || n > statedb.MaxImageCopies {
				return p, rest.BadRequest("Invalid setting image_copies: want an integer from 1 to %d.", statedb.MaxImageCopies)
			}
			p.ImageCopies = &n
		case "image_size_limit":
			var n int64
			if err := json.Unmarshal(v, &n); err != nil || n < 0 {
				return p, rest.BadRequest("Invalid setting image_size_limit: want a number of bytes >= 0 (0 = the default).")
			}
			p.ImageSizeLimit = &n
		case "fence_timeout", "ha_disabled":
			if err := decodeHASetting(&p, k, v); err != nil {
				return p, err
			}
		default:
			return p, rest.BadRequest("Unknown setting %q: the settings are storage, image_copies, image_size_limit, fence_timeout, ha_disabled and quotas.", k)
		}
	}
	return p, nil
}

// decodeQuotaDefaults reads the optional "quotas" field of a settings
// patch: {resource: limit}, -1 unlimited (docs/limits.md).
func decodeQuotaDefaults(raw map[string]json.RawMessage) (map[string]int64, error) {
	v, ok := raw["quotas"]
	if !ok {
		return nil, nil
	}
	var q map[string]int64
	if err := json.Unmarshal(v, &q); err != nil || q == nil {
		return nil, rest.BadRequest("Invalid setting quotas: want an object of quota resources and integer limits (-1 = unlimited).")
	}
	if err := statedb.CheckQuotaLimits(q); err != nil {
		return nil, rest.BadRequest("Invalid setting quotas: %v", err)
	}
	return q, nil
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// decodeHASetting reads fence_timeout (seconds, 0 = the default) and
// ha_disabled (a boolean) into p.
func decodeHASetting(p *statedb.UpdateSettingsCmd, k string, v json.RawMessage) error {
	if k == "ha_disabled" {
		var b bool
		if err := json.Unmarshal(v, &b); err != nil {
			return rest.BadRequest("Invalid setting ha_disabled: want true or false.")
		}
		p.HADisabled = &b
		return nil
	}
	var secs float64
	err := json.Unmarshal(v, &secs)
	d := time.Duration(secs * float64(time.Second))
	if err != nil || secs < 0 || (d != 0 && (d < statedb.MinFenceTimeout || d > statedb.MaxFenceTimeout)) {
		return rest.BadRequest("Invalid setting fence_timeout: want seconds from %g to %g, or 0 for the default.",
			statedb.MinFenceTimeout.Seconds(), statedb.MaxFenceTimeout.Seconds())
	}
	p.FenceTimeout = &d
	return nil
}
