package node

import (
	"testing"
	"time"
)

func TestMaxClockSkewConfig(t *testing.T) {
	tests := []struct {
		in      time.Duration
		want    time.Duration
		wantErr bool
	}{
		{0, DefaultMaxClockSkew, false},
		{5 * time.Second, 5 * time.Second, false},
		{-time.Second, 0, true},
		{certBackdate, 0, true},
	}
	for _, tt := range tests {
		c := Config{DataDir: t.TempDir(), Name: "h", AdvertiseAddr: "127.0.0.1", MaxClockSkew: tt.in}
		err := c.setDefaults()
		if (err != nil) != tt.wantErr || (err == nil && c.MaxClockSkew != tt.want) {
			t.Errorf("setDefaults(MaxClockSkew %v) = %v, %v; want %v, error %v", tt.in, c.MaxClockSkew, err, tt.want, tt.wantErr)
		}
	}
}
