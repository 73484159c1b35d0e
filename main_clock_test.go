package main

import "testing"

func TestFormatSkew(t *testing.T) {
	tests := []struct {
		in   int64 // ms; -1 << 62 means not measured (nil)
		want string
	}{
		{-1 << 62, "-"},
		{0, "+0ms"},
		{12, "+12ms"},
		{-999, "-999ms"},
		{1000, "+1.0s"},
		{3600200, "+3600.2s"},
		{-90000, "-90.0s"},
	}
	for _, tt := range tests {
		in := &tt.in
		if tt.in == -1<<62 {
			in = nil
		}
		if got := formatSkew(in); got != tt.want {
			t.Errorf("formatSkew(%d) = %q; want %q", tt.in, got, tt.want)
		}
	}
}
