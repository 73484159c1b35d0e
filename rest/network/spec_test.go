package network

import (
	"reflect"
	"strings"
	"testing"

	"github.com/peerstack/peerstack/rest"
)

// TestSpecsCoverInputs: every integer or boolean attribute a body type
// declares is converted by its resource's spec, so no attribute is left
// to the strict decoder (which would refuse "1400").
func TestSpecsCoverInputs(t *testing.T) {
	for _, tc := range []struct {
		typ  reflect.Type
		spec rest.Spec
	}{
		{reflect.TypeOf(networkInput{}), networkSpec},
		{reflect.TypeOf(subnetInput{}), subnetSpec},
		{reflect.TypeOf(portInput{}), portSpec},
		{reflect.TypeOf(secGroupInput{}), secGroupSpec},
		{reflect.TypeOf(secRuleInput{}), secRuleSpec},
		{reflect.TypeOf(routerInput{}), routerSpec},
		{reflect.TypeOf(floatingIPInput{}), floatingIPSpec},
	} {
		for i := 0; i < tc.typ.NumField(); i++ {
			f := tc.typ.Field(i)
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			switch ft.Kind() {
			case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
				reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Bool:
			default:
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if _, ok := tc.spec[name]; !ok {
				t.Errorf("%s.%s (%q) is an integer or boolean but its spec does not convert it", tc.typ.Name(), f.Name, name)
			}
		}
	}
}
