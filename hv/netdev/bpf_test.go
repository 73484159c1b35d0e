package netdev

import (
	"encoding/binary"
	"testing"
	"unsafe"
)

// TestBPFEncoding: instructions are 8 bytes in host order, the
// destination register in the nibble the host's kernel reads it from,
// and every jump of the guard resolves inside the program.
func TestBPFEncoding(t *testing.T) {
	if n := unsafe.Sizeof(insn{}); n != 8 {
		t.Fatalf("instruction size = %d; want 8", n)
	}
	i := insn{Code: opMovReg, Regs: regs(1, 2), Off: 3, Imm: 4}
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&i)), 8)
	off, imm := binary.NativeEndian.Uint16(raw[2:]), binary.NativeEndian.Uint32(raw[4:])
	if raw[0] != opMovReg || off != 3 || imm != 4 {
		t.Errorf("encoded %x; want code, offset and immediate in host order", raw)
	}
	if wantRegs := byte(0x21); littleEndian && raw[1] != wantRegs || !littleEndian && raw[1] != 0x12 {
		t.Errorf("registers byte = %#x", raw[1])
	}
	g := guardProg()
	if len(g) == 0 {
		t.Fatal("the guard has a jump to no label")
	}
	for n, in := range g {
		if in.Code&0x07 == 0x05 && in.Code != opExit && (n+1+int(in.Off) < 0 || n+1+int(in.Off) >= len(g)) {
			t.Errorf("jump %d of the guard goes to %d of %d", n, n+1+int(in.Off), len(g))
		}
	}
	if len(dropProg()) != 2 {
		t.Errorf("drop = %v", dropProg())
	}
}
