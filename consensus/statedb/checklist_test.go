package statedb

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestChecklistMatchesTree keeps docs/checklist-command.md honest: every
// path it names exists and every Go name it names is declared (a type, a
// function, a method, a field, a variable or a constant) in the package it
// says, or in one of consensus/statedb, consensus, rest, node and
// node/membership.
func TestChecklistMatchesTree(t *testing.T) {
	root := filepath.Join("..", "..")
	doc, err := os.ReadFile(filepath.Join(root, "docs", "checklist-command.md"))
	if err != nil {
		t.Fatal(err)
	}
	pkgs := map[string]string{"statedb": "consensus/statedb", "consensus": "consensus", "rest": "rest", "node": "node",
		"membership": "node/membership"}
	decls := map[string]map[string]bool{}
	for name, dir := range pkgs {
		decls[name] = declaredNames(t, filepath.Join(root, dir))
	}
	ident := regexp.MustCompile(`^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$`)
	var checked int
	for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(string(doc), -1) {
		tok := m[1]
		switch {
		case strings.ContainsAny(tok, "(["):
			continue // a code example
		case strings.Contains(tok, "/") || strings.HasSuffix(tok, ".go") || strings.HasSuffix(tok, ".md"):
			pattern := filepath.Join(root, strings.ReplaceAll(tok, "<resource>", "*"))
			if hits, _ := filepath.Glob(pattern); len(hits) == 0 {
				t.Errorf("checklist names %q: no such file in the tree", tok)
			}
		case ident.MatchString(tok):
			parts := strings.Split(tok, ".")
			if d, ok := decls[parts[0]]; ok && len(parts) > 1 {
				if !d[strings.Join(parts[1:], ".")] {
					t.Errorf("checklist names %q: not declared in package %s", tok, parts[0])
				}
				break
			}
			found := false
			for _, d := range decls {
				found = found || d[tok]
			}
			if !found {
				t.Errorf("checklist names %q: declared nowhere in %v", tok, pkgs)
			}
		default:
			t.Errorf("checklist has %q in backquotes: neither a path nor a Go name (write code examples with a call)", tok)
		}
		checked++
	}
	if checked < 10 {
		t.Fatalf("checked only %d names in the checklist; the parser is broken", checked)
	}
}

// declaredNames returns the names declared in the Go files of dir (tests
// included): top-level names, methods as both Type.Method and Method, and
// struct fields as Type.Field.
func declaredNames(t *testing.T, dir string) map[string]bool {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	fset := token.NewFileSet()
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, e.Name()), nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				out[d.Name.Name] = true
				if d.Recv != nil && len(d.Recv.List) == 1 {
					out[recvName(d.Recv.List[0].Type)+"."+d.Name.Name] = true
				}
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						out[s.Name.Name] = true
						if st, ok := s.Type.(*ast.StructType); ok {
							for _, fl := range st.Fields.List {
								for _, n := range fl.Names {
									out[s.Name.Name+"."+n.Name] = true
								}
							}
						}
					case *ast.ValueSpec:
						for _, n := range s.Names {
							out[n.Name] = true
						}
					}
				}
			}
		}
	}
	return out
}

func recvName(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.StarExpr:
		return recvName(e.X)
	case *ast.IndexExpr:
		return recvName(e.X)
	case *ast.Ident:
		return e.Name
	}
	return ""
}
