package statedb

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"
)

// TestSnapshotRoundTripEveryTable puts one row with every field set into
// each table of the schema, dumps the state, restores it into a fresh
// store and compares: a new table or field that a snapshot loses fails
// here without anyone listing it.
func TestSnapshotRoundTripEveryTable(t *testing.T) {
	s := NewStore()
	txn := s.db.Txn(true)
	for i, tb := range tables {
		o := tb.newObj()
		fill(reflect.ValueOf(o).Elem(), i)
		reflect.ValueOf(o).Elem().FieldByName("ID").SetString(fmt.Sprintf("%s-1", tb.schema.Name))
		if err := txn.Insert(tb.schema.Name, o); err != nil {
			t.Fatalf("insert %s: %v", tb.schema.Name, err)
		}
	}
	txn.Commit()
	s.commitAt(42, nil)

	var buf bytes.Buffer
	if err := s.Snapshot().Dump(json.NewEncoder(&buf)); err != nil {
		t.Fatal(err)
	}
	restored := NewStore()
	if err := restored.Restore(json.NewDecoder(&buf), 42); err != nil {
		t.Fatal(err)
	}
	if restored.AppliedIndex() != 42 {
		t.Fatalf("restored index = %d; want 42", restored.AppliedIndex())
	}
	before, after := s.Snapshot(), restored.Snapshot()
	d1, err1 := before.Digest()
	d2, err2 := after.Digest()
	if err1 != nil || err2 != nil || d1 != d2 || len(d1) != 64 {
		t.Fatalf("digests %q (%v) and %q (%v); want one SHA-256 for the same state", d1, err1, d2, err2)
	}
	txn = restored.db.Txn(true)
	o := tables[0].newObj()
	reflect.ValueOf(o).Elem().FieldByName("ID").SetString("another")
	if err := txn.Insert(tables[0].schema.Name, o); err != nil {
		t.Fatal(err)
	}
	txn.Commit()
	if d3, _ := restored.Snapshot().Digest(); d3 == d1 {
		t.Fatal("the digest did not change with the state")
	}
	for _, tb := range tables {
		want, got := rows(t, before, tb.schema.Name), rows(t, after, tb.schema.Name)
		if len(want) != 1 {
			t.Fatalf("%s: %d rows before the snapshot; want 1", tb.schema.Name, len(want))
		}
		if !reflect.DeepEqual(want, got) {
			t.Errorf("%s: restored rows differ\nbefore: %+v\nafter:  %+v", tb.schema.Name, want, got)
		}
	}
}

func rows(t *testing.T, sn *Snapshot, tbl string) []any {
	t.Helper()
	it, err := sn.txn.Get(tbl, "id")
	if err != nil {
		t.Fatal(err)
	}
	var out []any
	for o := it.Next(); o != nil; o = it.Next() {
		out = append(out, reflect.ValueOf(o).Elem().Interface())
	}
	return out
}

// fill sets every exported field of v to a non-zero value derived from
// seed (one element in slices and maps).
func fill(v reflect.Value, seed int) {
	switch v.Kind() {
	case reflect.String:
		v.SetString(fmt.Sprintf("s%d", seed))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(seed%100 + 1))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(seed%100 + 1))
	case reflect.Float32, reflect.Float64:
		v.SetFloat(float64(seed) + 0.5)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		fill(p.Elem(), seed+1)
		v.Set(p)
	case reflect.Slice:
		sl := reflect.MakeSlice(v.Type(), 1, 1)
		fill(sl.Index(0), seed+1)
		v.Set(sl)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k, seed+1)
		fill(e, seed+2)
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Date(2026, 1, 2, 3, 4, 5, seed, time.UTC)))
			return
		}
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), seed+i+1)
			}
		}
	}
}

// TestSnapshotIndexMatchesItsState: a snapshot taken while commands apply
// holds exactly the state at its Index (the digest of a store that
// applied the same commands up to that index), never a later commit
// labelled with an earlier index.
func TestSnapshotIndexMatchesItsState(t *testing.T) {
	const n = 400
	cmds := make([][]byte, n+1)
	for i := 1; i <= n; i++ {
		c, err := NewCommand(CmdCreateProject, fmt.Sprintf("r%d", i), t0, Project{ID: fmt.Sprintf("p%d", i), Name: fmt.Sprintf("n%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		cmds[i], _ = c.Encode()
	}
	// The digest after each index, from a store applying alone.
	ref := NewStore()
	want := make([]string, n+1)
	want[0], _ = ref.Snapshot().Digest()
	for i := 1; i <= n; i++ {
		if r := ref.Apply(uint64(i), cmds[i]); r.Err != nil {
			t.Fatal(r.Err)
		}
		want[i], _ = ref.Snapshot().Digest()
	}
	s := NewStore()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i <= n; i++ {
			s.Apply(uint64(i), cmds[i])
		}
	}()
	checked := 0
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		sn := s.Snapshot()
		got, err := sn.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if got != want[sn.Index] {
			t.Fatalf("snapshot labelled index %d holds another index's state", sn.Index)
		}
		checked++
	}
	t.Logf("%d snapshots checked", checked)
}
