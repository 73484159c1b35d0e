package rest_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/peerstack/peerstack/rest"
)

// formCases: each form against the values its service accepts (with the
// canonical JSON the handlers then decode) and refuses (with the reason
// the service gives).
var formCases = []struct {
	form rest.Form
	in   string
	want string // canonical JSON, or "" when refused
	why  string // part of the reason when refused
}{
	// Neutron convert_to_int: Python's int().
	{rest.PyInt, `1400`, `1400`, ""},
	{rest.PyInt, `"1400"`, `1400`, ""},
	{rest.PyInt, `" 1400\n"`, `1400`, ""},
	{rest.PyInt, `"+7"`, `7`, ""},
	{rest.PyInt, `"-7"`, `-7`, ""},
	{rest.PyInt, `"1_400"`, `1400`, ""},
	{rest.PyInt, `"007"`, `7`, ""},
	{rest.PyInt, `1.9`, `1`, ""},
	{rest.PyInt, `-1.9`, `-1`, ""},
	{rest.PyInt, `1e3`, `1000`, ""},
	{rest.PyInt, `true`, `1`, ""},
	{rest.PyInt, `-0`, `0`, ""},
	{rest.PyInt, `"abc"`, "", "'abc' is not an integer"},
	{rest.PyInt, `"1.5"`, "", "'1.5' is not an integer"},
	{rest.PyInt, `"1__0"`, "", "is not an integer"},
	{rest.PyInt, `"_1"`, "", "is not an integer"},
	{rest.PyInt, `"1_"`, "", "is not an integer"},
	{rest.PyInt, `""`, "", "'' is not an integer"},
	{rest.PyInt, `"0x10"`, "", "is not an integer"},
	{rest.PyInt, `[1]`, "", "'[1]' is not an integer"},
	{rest.PyInt, `{"a":1}`, "", "is not an integer"},
	// Neutron convert_to_boolean: oslo bool_from_string, strict.
	{rest.PyBool, `true`, `true`, ""},
	{rest.PyBool, `"True"`, `true`, ""},
	{rest.PyBool, `"TRUE"`, `true`, ""},
	{rest.PyBool, `" yes "`, `true`, ""},
	{rest.PyBool, `"t"`, `true`, ""},
	{rest.PyBool, `"on"`, `true`, ""},
	{rest.PyBool, `1`, `true`, ""},
	{rest.PyBool, `"1"`, `true`, ""},
	{rest.PyBool, `0`, `false`, ""},
	{rest.PyBool, `"False"`, `false`, ""},
	{rest.PyBool, `"No"`, `false`, ""},
	{rest.PyBool, `"off"`, `false`, ""},
	{rest.PyBool, `2`, "", "'2' cannot be converted to boolean"},
	{rest.PyBool, `1.0`, "", "'1.0' cannot be converted to boolean"},
	{rest.PyBool, `"maybe"`, "", "'maybe' cannot be converted to boolean"},
	{rest.PyBool, `[]`, "", "'[]' cannot be converted to boolean"},
	// Nova's positive/non-negative integers: integer or ^[0-9]*$ string.
	{rest.NovaInt, `2`, `2`, ""},
	{rest.NovaInt, `"2"`, `2`, ""},
	{rest.NovaInt, `"2\n"`, `2`, ""},
	{rest.NovaInt, `"02"`, `2`, ""},
	{rest.NovaInt, `-1`, `-1`, ""}, // the minimum is the handler's check
	{rest.NovaInt, `"-1"`, "", `'-1' does not match '^[0-9]*$'`},
	{rest.NovaInt, `" 2"`, "", `' 2' does not match`},
	{rest.NovaInt, `"abc"`, "", `'abc' does not match`},
	{rest.NovaInt, `""`, "", `'' is too short`},
	{rest.NovaInt, `1.5`, "", `1.5 is not of type 'integer', 'string'`},
	{rest.NovaInt, `2.0`, "", `2.0 is not of type 'integer', 'string'`},
	{rest.NovaInt, `true`, "", `True is not of type 'integer', 'string'`},
	{rest.NovaSignedInt, `"-1"`, `-1`, ""},
	{rest.NovaSignedInt, `"0"`, `0`, ""},
	{rest.NovaSignedInt, `"+1"`, "", `does not match '^-?[0-9]+$'`},
	// Nova's boolean: the listed spellings only.
	{rest.NovaBool, `true`, `true`, ""},
	{rest.NovaBool, `"True"`, `true`, ""},
	{rest.NovaBool, `"yes"`, `true`, ""},
	{rest.NovaBool, `"1"`, `true`, ""},
	{rest.NovaBool, `"off"`, `false`, ""},
	{rest.NovaBool, `"tRUE"`, "", "'tRUE' is not one of [True, 'True'"},
	{rest.NovaBool, `"y"`, "", "'y' is not one of"},
	{rest.NovaBool, `1`, "", "1 is not of type 'boolean', 'string'"},
	// Nova's rxtx_factor.
	{rest.NovaNumber, `1.5`, `1.5`, ""},
	{rest.NovaNumber, `"1.5"`, `1.5`, ""},
	{rest.NovaNumber, `"2"`, `2`, ""},
	{rest.NovaNumber, `"1e3"`, "", `'1e3' does not match`},
	{rest.NovaNumber, `"-1"`, "", `does not match`},
	{rest.NovaNumber, `false`, "", `False is not of type 'number', 'string'`},
	// Cinder's volume size and boolean.
	{rest.CinderInt, `"1"`, `1`, ""},
	{rest.CinderInt, `1`, `1`, ""},
	{rest.CinderInt, `""`, "", `'' does not match '^[0-9]+$'`},
	{rest.CinderInt, `"1.0"`, "", `'1.0' does not match '^[0-9]+$'`},
	{rest.CinderBool, `"y"`, `true`, ""},
	{rest.CinderBool, `"f"`, `false`, ""},
	{rest.CinderBool, `"maybe"`, "", `'maybe' is not one of`},
	// Keystone and Glance: JSON types only.
	{rest.JSONInt, `1`, `1`, ""},
	{rest.JSONInt, `1.0`, `1`, ""},
	{rest.JSONInt, `"1"`, "", `'1' is not of type 'integer'`},
	{rest.JSONInt, `1.5`, "", `1.5 is not of type 'integer'`},
	{rest.JSONBool, `false`, `false`, ""},
	{rest.JSONBool, `"true"`, "", `'true' is not of type 'boolean'`},
	{rest.JSONBool, `1`, "", `1 is not of type 'boolean'`},
}

func TestForms(t *testing.T) {
	for _, tc := range formCases {
		t.Run(tc.form.Name()+" "+tc.in, func(t *testing.T) {
			got, err := tc.form.ConvertRaw("attr", json.RawMessage(tc.in))
			if tc.want == "" {
				var fe *rest.FormError
				if !errors.As(err, &fe) {
					t.Fatalf("convert %s = %v, %v; want a FormError", tc.in, got, err)
				}
				if !strings.Contains(fe.Reason, tc.why) || fe.Field != "attr" {
					t.Errorf("convert %s: field %q reason %q; want field attr and a reason containing %q", tc.in, fe.Field, fe.Reason, tc.why)
				}
				return
			}
			if err != nil {
				t.Fatalf("convert %s: %v", tc.in, err)
			}
			out, _ := json.Marshal(got)
			if string(out) != tc.want {
				t.Errorf("convert %s = %s; want %s", tc.in, out, tc.want)
			}
			// A converted value converts to itself.
			again, err := tc.form.Convert("attr", got)
			if err != nil || again != got {
				t.Errorf("reconvert %v = %v, %v; want the same value", got, again, err)
			}
		})
	}
}

func TestNormalize(t *testing.T) {
	spec := rest.Spec{
		"mtu":                              rest.PyInt,
		"shared":                           rest.PyBool,
		"volume.size":                      rest.CinderInt,
		"block_device_mapping_v2[].size":   rest.NovaInt,
		"block_device_mapping_v2[].flag":   rest.NovaBool,
		"missing.deeper":                   rest.PyInt,
		"wrongtype[].x":                    rest.PyInt,
		"name_with_<html>_and_&":           rest.PyInt,
		"block_device_mapping_v2[].absent": rest.PyInt,
	}
	in := `{"mtu":"1400","shared":"True","name":"<b>&","volume":{"size":"2"},"keep":null,"wrongtype":{"x":"1"},
		"block_device_mapping_v2":[{"size":"3","flag":"yes"},{"size":4},"not an object",{"flag":null}]}`
	out, err := rest.Normalize(json.RawMessage(in), spec)
	if err != nil {
		t.Fatalf("Normalize: %v", err)
	}
	var got, want any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("Normalize gave %s: %v", out, err)
	}
	_ = json.Unmarshal([]byte(`{"mtu":1400,"shared":true,"name":"<b>&","volume":{"size":2},"keep":null,"wrongtype":{"x":"1"},
		"block_device_mapping_v2":[{"size":3,"flag":true},{"size":4},"not an object",{"flag":null}]}`), &want)
	if g, w := mustJSON(t, got), mustJSON(t, want); g != w {
		t.Errorf("Normalize = %s; want %s", g, w)
	}
	if !bytes.Contains(out, []byte(`"<b>&"`)) {
		t.Errorf("Normalize escaped HTML in strings: %s", out)
	}

	// Nothing to convert: the same bytes come back.
	same := `{"mtu": 1400 }`
	if out, err := rest.Normalize(json.RawMessage(same), rest.Spec{"other": rest.PyInt}); err != nil || string(out) != same {
		t.Errorf("Normalize without matches = %s, %v; want the input", out, err)
	}
	// Malformed JSON is left for the typed decoder to report.
	if out, err := rest.Normalize(json.RawMessage(`{"mtu":`), spec); err != nil || string(out) != `{"mtu":` {
		t.Errorf("Normalize(malformed) = %s, %v; want the input back", out, err)
	}

	// The first bad attribute in path order is reported, with its path.
	_, err = rest.Normalize(json.RawMessage(`{"shared":"maybe","mtu":"x","block_device_mapping_v2":[{"size":"-1"}]}`), spec)
	var fe *rest.FormError
	if !errors.As(err, &fe) || fe.Field != "size" || fe.Path != "block_device_mapping_v2[].size" || fe.Shown() != "-1" {
		t.Fatalf("Normalize error = %#v; want size at block_device_mapping_v2[].size", err)
	}
	_, err = rest.Normalize(json.RawMessage(`{"shared":"maybe","mtu":"x"}`), spec)
	if !errors.As(err, &fe) || fe.Field != "mtu" || fe.Reason != "'x' is not an integer" {
		t.Fatalf("Normalize error = %#v; want mtu's", err)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var allForms = []rest.Form{rest.PyInt, rest.PyBool, rest.NovaInt, rest.NovaSignedInt, rest.NovaBool, rest.NovaNumber,
	rest.CinderInt, rest.CinderBool, rest.JSONInt, rest.JSONBool}

// FuzzForms: no value makes a form panic; what a form accepts it accepts
// again unchanged, and Int/Bool/Float agree with Convert.
func FuzzForms(f *testing.F) {
	for _, tc := range formCases {
		f.Add(tc.in)
	}
	for _, s := range []string{`1e400`, `-1e400`, `99999999999999999999999`, `"99999999999999999999"`, `"\u0661"`,
		`"1\n\n"`, `"  "`, `null`, `"-"`, `"+"`, `"٣"`, `0.0000001`, `"TRUE "`, `{"":[]}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		for _, form := range allForms {
			got, err := form.ConvertRaw("x", json.RawMessage(in))
			if err != nil {
				var fe *rest.FormError
				if !errors.As(err, &fe) || fe.Reason == "" {
					t.Fatalf("%s(%q) error %v is not a FormError with a reason", form.Name(), in, err)
				}
				continue
			}
			again, err := form.Convert("x", got)
			if err != nil || again != got {
				t.Fatalf("%s(%q) = %v, which reconverts to %v, %v", form.Name(), in, got, again, err)
			}
			switch v := got.(type) {
			case bool:
				if b, err := form.Bool("x", json.RawMessage(in)); err != nil || b != v {
					t.Fatalf("%s.Bool(%q) = %v, %v; want %v", form.Name(), in, b, err, v)
				}
			case json.Number:
				if _, err := v.Float64(); err != nil && !strings.Contains(err.Error(), "range") {
					t.Fatalf("%s(%q) = %q, not a number: %v", form.Name(), in, v, err)
				}
			default:
				t.Fatalf("%s(%q) = %T %v; want a bool or a json.Number", form.Name(), in, got, got)
			}
		}
	})
}

// FuzzNormalize: any body under a spec with nested and array paths either
// gives a FormError or valid JSON that normalizes to itself.
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{
		`{"mtu":"1400","shared":"True","volume":{"size":"1"},"bdm":[{"size":"2","flag":"yes"}]}`,
		`{"mtu":1.5,"shared":1,"volume":[],"bdm":{"size":1}}`,
		`{"mtu":null,"bdm":[null,1,"x",{"size":null}]}`,
		`[]`, `null`, `"x"`, `{`, ``, `{"mtu":"x"}`, `{"volume":{"size":"-1"}}`, `{"mtu":"1"} {"mtu":"2"}`,
	} {
		f.Add(s)
	}
	spec := rest.Spec{"mtu": rest.PyInt, "shared": rest.PyBool, "volume.size": rest.CinderInt,
		"bdm[].size": rest.NovaInt, "bdm[].flag": rest.NovaBool}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := rest.Normalize(json.RawMessage(in), spec)
		if err != nil {
			var fe *rest.FormError
			if !errors.As(err, &fe) || fe.Field == "" || fe.Reason == "" {
				t.Fatalf("Normalize(%q) error %v is not a FormError", in, err)
			}
			return
		}
		if string(out) == in {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("Normalize(%q) = %q, not JSON", in, out)
		}
		again, err := rest.Normalize(out, spec)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("Normalize(%q) = %s, which normalizes to %s, %v", in, out, again, err)
		}
	})
}

// TestDecisionZeroDenies: a policy that returns an unset Decision forbids.
func TestDecisionZeroDenies(t *testing.T) {
	var d rest.Decision
	if d == rest.Allow || d != rest.Forbidden {
		t.Fatalf("zero Decision = %d; want Forbidden (%d), never Allow (%d)", d, rest.Forbidden, rest.Allow)
	}
}
