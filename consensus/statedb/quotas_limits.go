package statedb

// Hard limits: sizes no quota can raise. Every byte of the state is held
// in memory and written to the Raft log on every host, and edge hosts
// have little memory and slow SD cards, so one request must not be able
// to grow the state by more than a few tens of KB per object. The REST
// services check these before proposing (and answer 400 or 413); apply
// checks them again so no command can carry more. docs/limits.md lists
// them for users, with the per-field limits each API enforces itself.
const (
	// MaxImageProperties is the most extra properties an image may carry.
	MaxImageProperties = 128
	// MaxImagePropertyBytes bounds the sum of an image's extra property
	// key and value lengths.
	MaxImagePropertyBytes = 32 << 10
	// MaxServerMetadataItems bounds a server's metadata items; the
	// metadata_items quota may be set lower, never higher.
	MaxServerMetadataItems = 128
)

// CheckImageProperties enforces the image property limits. It is the
// rule apply uses; the image API calls it before proposing.
func CheckImageProperties(props map[string]string) error {
	if len(props) > MaxImageProperties {
		return Errorf(KindInvalid, "An image may have at most %d extra properties; this one would have %d.", MaxImageProperties, len(props))
	}
	n := 0
	for k, v := range props {
		n += len(k) + len(v)
	}
	if n > MaxImagePropertyBytes {
		return Errorf(KindInvalid, "The extra properties of an image may total at most %d bytes; these total %d.", MaxImagePropertyBytes, n)
	}
	return nil
}

// checkImageLimits is the image hard limits inside apply.
func checkImageLimits(t *Txn, img *Image) error {
	if !t.read().QuotasEnforced() {
		return nil
	}
	return CheckImageProperties(img.Properties)
}
