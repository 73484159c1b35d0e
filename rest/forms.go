package rest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Form is one service's rule for reading an integer, a boolean or a number
// from the JSON value a client sent. The real clients send some numbers and
// booleans as strings ("1400", "True"), and each OpenStack service accepts
// its own set of spellings: Neutron runs Python's int() and oslo's strict
// bool_from_string over every attribute it declares convertible, Nova and
// Cinder validate with JSON schemas that allow integers as digit strings
// and booleans from a fixed list, Keystone and Glance take only JSON
// integers and booleans. A Form accepts exactly what its service accepts
// and rejects the rest with the reason the service gives.
type Form struct {
	name string
	conv func(v any) (any, string) // the JSON value to use, or why not
}

// Name is the form's name, for test and error output.
func (f Form) Name() string { return f.name }

// FormError says why a value does not have the form an attribute needs.
// Services render it in their own error shape.
type FormError struct {
	Field  string // the attribute's own name (the last element of its path)
	Path   string // the attribute's path in the decoded object
	Value  any    // the value as decoded (json.Number for numbers)
	Reason string // the service's own sentence, e.g. "'abc' is not an integer"
}

func (e *FormError) Error() string { return "invalid " + e.Field + ": " + e.Reason }

// Shown is the value as Python's str() prints it, which is how the
// services quote it in messages ("Value: abc.").
func (e *FormError) Shown() string { return pyStr(e.Value) }

// Convert returns v in the form's canonical JSON value (json.Number for
// integers and numbers, bool for booleans) or a *FormError naming field.
func (f Form) Convert(field string, v any) (any, error) {
	out, why := f.conv(v)
	if why != "" {
		return nil, &FormError{Field: field, Path: field, Value: v, Reason: why}
	}
	return out, nil
}

// ConvertRaw is Convert for one raw JSON value. Malformed JSON is a
// FormError too (the body decoder normally catches it first).
func (f Form) ConvertRaw(field string, raw json.RawMessage) (any, error) {
	v, err := decodeAny(raw)
	if err != nil {
		return nil, &FormError{Field: field, Path: field, Value: string(raw), Reason: "malformed JSON value"}
	}
	return f.Convert(field, v)
}

// Int converts raw to an int64 (the form must be an integer form).
func (f Form) Int(field string, raw json.RawMessage) (int64, error) {
	v, err := f.ConvertRaw(field, raw)
	if err != nil {
		return 0, err
	}
	n, ok := v.(json.Number)
	if !ok {
		return 0, &FormError{Field: field, Path: field, Value: v, Reason: fmt.Sprintf("%s is not an integer", pyRepr(v))}
	}
	i, err := n.Int64()
	if err != nil {
		return 0, &FormError{Field: field, Path: field, Value: v, Reason: fmt.Sprintf("%s is too large", n)}
	}
	return i, nil
}

// Bool converts raw to a bool (the form must be a boolean form).
func (f Form) Bool(field string, raw json.RawMessage) (bool, error) {
	v, err := f.ConvertRaw(field, raw)
	if err != nil {
		return false, err
	}
	b, ok := v.(bool)
	if !ok {
		return false, &FormError{Field: field, Path: field, Value: v, Reason: fmt.Sprintf("%s is not of type 'boolean'", pyRepr(v))}
	}
	return b, nil
}

// Float converts raw to a float64 (the form must be a number form).
func (f Form) Float(field string, raw json.RawMessage) (float64, error) {
	v, err := f.ConvertRaw(field, raw)
	if err != nil {
		return 0, err
	}
	n, ok := v.(json.Number)
	if !ok {
		return 0, &FormError{Field: field, Path: field, Value: v, Reason: fmt.Sprintf("%s is not a number", pyRepr(v))}
	}
	x, err := n.Float64()
	if err != nil || math.IsInf(x, 0) {
		return 0, &FormError{Field: field, Path: field, Value: v, Reason: fmt.Sprintf("%s is too large", n)}
	}
	return x, nil
}

// Spec names the attributes of a JSON object that a service converts, by
// path: "mtu" is a member of the object itself, "volume.size" a member of
// its member volume, "block_device_mapping_v2[].volume_size" a member of
// every element of the array block_device_mapping_v2.
type Spec map[string]Form

// Normalize rewrites the attributes spec names into their canonical JSON
// values, so that a plain typed decode can follow. Absent attributes and
// nulls are left alone (each handler keeps its own meaning for null), as
// are paths whose containers have the wrong type (the typed decode reports
// those). The first attribute, in path order, that does not convert is
// returned as a *FormError. Malformed JSON is returned unchanged.
func Normalize(raw json.RawMessage, spec Spec) (json.RawMessage, error) {
	if len(spec) == 0 {
		return raw, nil
	}
	root, err := decodeAny(raw)
	if err != nil {
		return raw, nil
	}
	paths := make([]string, 0, len(spec))
	for p := range spec {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	changed := false
	for _, p := range paths {
		if err := normalizeAt(root, strings.Split(p, "."), p, spec[p], &changed); err != nil {
			return nil, err
		}
	}
	if !changed {
		return raw, nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(root); err != nil {
		return nil, fmt.Errorf("re-encode normalized body: %w", err)
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

func normalizeAt(node any, segs []string, path string, f Form, changed *bool) error {
	m, ok := node.(map[string]any)
	if !ok {
		return nil
	}
	seg := segs[0]
	if name, each := strings.CutSuffix(seg, "[]"); each {
		arr, ok := m[name].([]any)
		if !ok || len(segs) == 1 {
			return nil
		}
		for _, el := range arr {
			if err := normalizeAt(el, segs[1:], path, f, changed); err != nil {
				return err
			}
		}
		return nil
	}
	v, present := m[seg]
	if !present || v == nil {
		return nil
	}
	if len(segs) > 1 {
		return normalizeAt(v, segs[1:], path, f, changed)
	}
	out, why := f.conv(v)
	if why != "" {
		return &FormError{Field: seg, Path: path, Value: v, Reason: why}
	}
	m[seg] = out
	*changed = true
	return nil
}

func decodeAny(raw json.RawMessage) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("trailing data after JSON value")
	}
	return v, nil
}

// ---- Neutron: Python's int() and oslo's strict bool_from_string ----

// PyInt is Neutron's convert_to_int: Python's int() over the decoded
// value. It takes integers, digit strings with surrounding whitespace, a
// sign and single underscores between digits ("1400", " 7 ", "+5",
// "1_000"), booleans (True is 1) and floats, which it truncates toward
// zero (1.9 is 1). It refuses other strings, null, lists and objects with
// "'<value>' is not an integer".
var PyInt = Form{name: "python-int", conv: pyInt}

// PyBool is Neutron's convert_to_boolean: oslo's bool_from_string in strict
// mode. Booleans stay; anything else is turned into its Python string,
// stripped and lower-cased, and must be one of 1 t true on y yes (true) or
// 0 f false off n no (false): "True", "1", 1 and "no" are booleans, 2,
// 1.0 and "maybe" are "'<value>' cannot be converted to boolean".
var PyBool = Form{name: "python-bool", conv: pyBool}

func pyInt(v any) (any, string) {
	bad := fmt.Sprintf("'%s' is not an integer", pyStr(v))
	switch x := v.(type) {
	case bool:
		if x {
			return json.Number("1"), ""
		}
		return json.Number("0"), ""
	case json.Number:
		if isIntLiteral(string(x)) {
			return canonicalInt(string(x)), ""
		}
		n, ok := truncFloat(string(x))
		if !ok {
			return nil, bad
		}
		return n, ""
	case string:
		s, ok := pyIntString(x)
		if !ok {
			return nil, bad
		}
		return s, ""
	}
	return nil, bad
}

// pyIntString parses a string as Python's int(s) does for base 10 (ASCII
// digits only).
func pyIntString(s string) (json.Number, bool) {
	s = strings.TrimSpace(s)
	sign := ""
	if s != "" && (s[0] == '+' || s[0] == '-') {
		if s[0] == '-' {
			sign = "-"
		}
		s = s[1:]
	}
	if s == "" {
		return "", false
	}
	var digits strings.Builder
	prevDigit := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			digits.WriteByte(c)
			prevDigit = true
		case c == '_' && prevDigit && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9':
			prevDigit = false
		default:
			return "", false
		}
	}
	return canonicalInt(sign + digits.String()), true
}

var intLiteralRE = regexp.MustCompile(`^-?[0-9]+$`)

func isIntLiteral(s string) bool { return intLiteralRE.MatchString(s) }

// canonicalInt drops leading zeros and the sign of zero from a decimal
// integer literal (text only: a huge literal costs no arithmetic).
func canonicalInt(s string) json.Number {
	neg := strings.HasPrefix(s, "-")
	digits := strings.TrimLeft(strings.TrimPrefix(s, "-"), "0")
	switch {
	case digits == "":
		return "0"
	case neg:
		return json.Number("-" + digits)
	}
	return json.Number(digits)
}

// truncFloat is Python's int() of a JSON float: truncation toward zero.
// Values beyond ±2^63 are refused rather than expanded digit by digit (a
// body of "1e99999999" must not cost the server a hundred million digits).
func truncFloat(s string) (json.Number, bool) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.Abs(f) >= 1<<63 {
		return "", false
	}
	return json.Number(strconv.FormatFloat(math.Trunc(f)+0, 'f', 0, 64)), true
}

var (
	pyTrue  = []string{"1", "t", "true", "on", "y", "yes"}
	pyFalse = []string{"0", "f", "false", "off", "n", "no"}
)

func pyBool(v any) (any, string) {
	if b, ok := v.(bool); ok {
		return b, ""
	}
	s := pyStr(v)
	if n, ok := v.(json.Number); ok && isIntLiteral(string(n)) {
		s = string(canonicalInt(string(n)))
	}
	low := strings.ToLower(strings.TrimSpace(s))
	switch {
	case slices.Contains(pyTrue, low):
		return true, ""
	case slices.Contains(pyFalse, low):
		return false, ""
	}
	return nil, fmt.Sprintf("'%s' cannot be converted to boolean", s)
}

// ---- Nova and Cinder: JSON schemas ----

// SchemaInt is a JSON-schema integer that may come as a string:
// {"type": ["integer", "string"], "pattern": pattern}, as Nova's
// positive_integer and Cinder's volume sizes are. Integers pass (a bound is
// the handler's check), strings must match the pattern (Python's "$" also
// matches before one trailing newline), everything else, floats and
// booleans included, is "<value> is not of type 'integer', 'string'".
func SchemaInt(pattern string) Form {
	re := regexp.MustCompile(strings.TrimSuffix(pattern, "$") + `\n?$`)
	return Form{name: "schema-int " + pattern, conv: func(v any) (any, string) {
		switch x := v.(type) {
		case json.Number:
			if isIntLiteral(string(x)) {
				return canonicalInt(string(x)), ""
			}
		case string:
			if !re.MatchString(x) {
				return nil, fmt.Sprintf("%s does not match '%s'", pyRepr(x), pattern)
			}
			n, ok := pyIntString(x)
			if !ok {
				return nil, fmt.Sprintf("%s is too short", pyRepr(x))
			}
			return n, ""
		}
		return nil, fmt.Sprintf("%s is not of type 'integer', 'string'", pyRepr(v))
	}}
}

// SchemaNumber is a JSON-schema number that may come as a decimal string
// matching pattern (Nova's rxtx_factor).
func SchemaNumber(pattern string) Form {
	re := regexp.MustCompile(strings.TrimSuffix(pattern, "$") + `\n?$`)
	return Form{name: "schema-number " + pattern, conv: func(v any) (any, string) {
		switch x := v.(type) {
		case json.Number:
			return x, ""
		case string:
			if !re.MatchString(x) {
				return nil, fmt.Sprintf("%s does not match '%s'", pyRepr(x), pattern)
			}
			return json.Number(strings.TrimSuffix(x, "\n")), ""
		}
		return nil, fmt.Sprintf("%s is not of type 'number', 'string'", pyRepr(v))
	}}
}

// SchemaBool is a JSON-schema boolean that may come as one of the listed
// strings, matched exactly: {"type": ["boolean", "string"], "enum": [...]}.
func SchemaBool(trueStrings, falseStrings []string) Form {
	enum := "[True, "
	for _, s := range trueStrings {
		enum += pyRepr(s) + ", "
	}
	enum += "False"
	for _, s := range falseStrings {
		enum += ", " + pyRepr(s)
	}
	enum += "]"
	return Form{name: "schema-bool", conv: func(v any) (any, string) {
		switch x := v.(type) {
		case bool:
			return x, ""
		case string:
			switch {
			case slices.Contains(trueStrings, x):
				return true, ""
			case slices.Contains(falseStrings, x):
				return false, ""
			}
			return nil, fmt.Sprintf("%s is not one of %s", pyRepr(x), enum)
		}
		return nil, fmt.Sprintf("%s is not of type 'boolean', 'string'", pyRepr(v))
	}}
}

// The Nova and Cinder forms.
var (
	// NovaInt is Nova's positive_integer and non_negative_integer.
	NovaInt = SchemaInt("^[0-9]*$")
	// NovaSignedInt is Nova's boot_index and console length.
	NovaSignedInt = SchemaInt("^-?[0-9]+$")
	// NovaBool is Nova's parameter_types.boolean.
	NovaBool = SchemaBool(
		[]string{"True", "TRUE", "true", "1", "ON", "On", "on", "YES", "Yes", "yes"},
		[]string{"False", "FALSE", "false", "0", "OFF", "Off", "off", "NO", "No", "no"})
	// NovaNumber is Nova's rxtx_factor.
	NovaNumber = SchemaNumber(`^[0-9]+(\.[0-9]+)?$`)
	// CinderInt is Cinder's volume_size.
	CinderInt = SchemaInt("^[0-9]+$")
	// CinderBool is Cinder's parameter_types.boolean, which adds y/t/n/f.
	CinderBool = SchemaBool(
		[]string{"True", "TRUE", "true", "1", "ON", "On", "on", "YES", "Yes", "yes", "y", "t"},
		[]string{"False", "FALSE", "false", "0", "OFF", "Off", "off", "NO", "No", "no", "n", "f"})
)

// ---- Keystone and Glance: plain JSON types ----

// JSONInt takes JSON numbers with an integral value only (1 and 1.0, not
// "1" or 1.5): Keystone's and Glance's {"type": "integer"}.
var JSONInt = Form{name: "json-int", conv: func(v any) (any, string) {
	if n, ok := v.(json.Number); ok {
		if isIntLiteral(string(n)) {
			return canonicalInt(string(n)), ""
		}
		if f, err := strconv.ParseFloat(string(n), 64); err == nil && f == math.Trunc(f) {
			if i, ok := truncFloat(string(n)); ok {
				return i, ""
			}
		}
	}
	return nil, fmt.Sprintf("%s is not of type 'integer'", pyRepr(v))
}}

// JSONBool takes JSON booleans only: Keystone's and Glance's
// {"type": "boolean"}.
var JSONBool = Form{name: "json-bool", conv: func(v any) (any, string) {
	if b, ok := v.(bool); ok {
		return b, ""
	}
	return nil, fmt.Sprintf("%s is not of type 'boolean'", pyRepr(v))
}}

// ---- Python's str() and repr() of decoded JSON values ----

func pyStr(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return pyRepr(v)
}

func pyRepr(v any) string {
	switch x := v.(type) {
	case nil:
		return "None"
	case bool:
		if x {
			return "True"
		}
		return "False"
	case json.Number:
		return string(x)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case string:
		if strings.Contains(x, "'") && !strings.Contains(x, `"`) {
			return `"` + x + `"`
		}
		return "'" + strings.ReplaceAll(strings.ReplaceAll(x, `\`, `\\`), "'", `\'`) + "'"
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = pyRepr(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = pyRepr(k) + ": " + pyRepr(x[k])
		}
		return "{" + strings.Join(parts, ", ") + "}"
	}
	return fmt.Sprint(v)
}
