package netdev

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// insn is one eBPF instruction as the kernel reads it: every field in
// host byte order; the two register numbers share a byte, the
// destination in its low nibble on a little-endian host and in its high
// nibble on a big-endian one.
type insn struct {
	Code uint8
	Regs uint8
	Off  int16
	Imm  int32
}

var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

func regs(dst, src uint8) uint8 {
	if littleEndian {
		return src<<4 | dst
	}
	return dst<<4 | src
}

// htons is the 16-bit big-endian v as the host reads it from memory (as
// __sk_buff.protocol holds it).
func htons(v uint16) int32 {
	return int32(binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, v)))
}

// eBPF opcodes used here.
const (
	opMovImm  = 0xb7 // dst = imm
	opMovReg  = 0xbf // dst = src
	opAddImm  = 0x07 // dst += imm
	opAddReg  = 0x0f // dst += src
	opAndImm  = 0x57 // dst &= imm
	opLshImm  = 0x67 // dst <<= imm
	opLdxW    = 0x61 // dst = *(u32 *)(src + off)
	opLdAbsB  = 0x30 // r0 = packet byte at imm (r6: the skb)
	opLdAbsH  = 0x28 // r0 = packet half word at imm, host order
	opLdIndB  = 0x50 // r0 = packet byte at src + imm
	opLdIndH  = 0x48 // r0 = packet half word at src + imm, host order
	opJa      = 0x05
	opJeqImm  = 0x15
	opJneImm  = 0x55
	opJgtReg  = 0x2d // if dst > src
	opJltImm  = 0xa5 // if dst < imm
	opExit    = 0x95
	actUnspec = -1 // TC_ACT_UNSPEC: go on with the next filter
	actShot   = 2  // TC_ACT_SHOT: drop
)

// asm assembles instructions whose jumps name labels.
type asm struct {
	out    []insn
	labels map[string]int
	fix    map[int]string // instruction → label it jumps to
}

func (a *asm) op(code, dst, src uint8, off int16, imm int32) {
	a.out = append(a.out, insn{Code: code, Regs: regs(dst, src), Off: off, Imm: imm})
}

func (a *asm) jmp(code, dst, src uint8, imm int32, label string) {
	if a.fix == nil {
		a.fix = map[int]string{}
	}
	a.fix[len(a.out)] = label
	a.op(code, dst, src, 0, imm)
}

func (a *asm) label(l string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	a.labels[l] = len(a.out)
}

func (a *asm) ret(v int32) {
	a.op(opMovImm, 0, 0, 0, v)
	a.op(opExit, 0, 0, 0, 0)
}

// done resolves the jumps; nil if one names no label.
func (a *asm) done() []insn {
	for i, l := range a.fix {
		at, ok := a.labels[l]
		if !ok {
			return nil
		}
		a.out[i].Off = int16(at - i - 1)
	}
	return a.out
}

// dropProg drops every frame (direct action, TC_ACT_SHOT): this kernel
// may lack the gact action.
func dropProg() []insn {
	var a asm
	a.ret(actShot)
	return a.done()
}

// guardProg drops what a guest must not send even from its own addresses
// and lets everything else go on to the next filter: IPv4 UDP from port
// 67 or to port 68 (a DHCP server's replies: a client takes whatever
// reaches its port), IPv4 headers shorter than 20 bytes, ICMPv6 router
// advertisements (134) and redirects (137), UDP from port 547 or to port
// 546 (DHCPv6 server replies). It follows up to three IPv6 hop-by-hop,
// routing, destination options or fragment headers (more, or a header
// running past the packet, is dropped); fragments after the first carry
// no ports and pass.
func guardProg() []insn {
	const r0, r1, r6, r7, r8, r9 = 0, 1, 6, 7, 8, 9
	// cls_bpf shows the frame from its Ethernet header on ingress too
	// (tagged frames have a tag's protocol and are left to the u32
	// filters, which refuse them).
	const eth = 14
	var a asm
	a.op(opMovReg, r6, 1, 0, 0) // r6 = skb (for the packet loads)
	a.op(opLdxW, r7, 1, 0, 0)   // r7 = skb->len
	a.op(opLdxW, r8, 1, 16, 0)  // r8 = skb->protocol
	a.jmp(opJeqImm, r8, 0, htons(unix.ETH_P_IP), "ipv4")
	a.jmp(opJeqImm, r8, 0, htons(unix.ETH_P_IPV6), "ipv6")
	a.label("pass")
	a.ret(actUnspec)
	a.label("drop")
	a.ret(actShot)

	a.label("ipv4")
	a.op(opMovImm, r1, 0, 0, eth+20)
	a.jmp(opJgtReg, r1, r7, 0, "pass") // shorter than a header: the u32 filters refuse it
	a.op(opLdAbsB, 0, 0, 0, eth)
	a.op(opAndImm, r0, 0, 0, 0x0f)
	a.jmp(opJltImm, r0, 0, 5, "drop") // a header length that is no header
	a.op(opLdAbsB, 0, 0, 0, eth+9)
	a.jmp(opJneImm, r0, 0, unix.IPPROTO_UDP, "pass")
	a.op(opLdAbsH, 0, 0, 0, eth+6)
	a.op(opAndImm, r0, 0, 0, 0x1fff)
	a.jmp(opJneImm, r0, 0, 0, "pass") // a later fragment
	a.op(opLdAbsB, 0, 0, 0, eth)
	a.op(opAndImm, r0, 0, 0, 0x0f)
	a.op(opLshImm, r0, 0, 0, 2)
	a.op(opMovReg, r9, r0, 0, 0) // r9 = offset of the UDP header
	a.op(opAddImm, r9, 0, 0, eth)
	a.op(opMovReg, r1, r9, 0, 0)
	a.op(opAddImm, r1, 0, 0, 4)
	a.jmp(opJgtReg, r1, r7, 0, "drop") // UDP without its ports
	a.op(opLdIndH, 0, r9, 0, 0)
	a.jmp(opJeqImm, r0, 0, 67, "drop")
	a.op(opLdIndH, 0, r9, 0, 2)
	a.jmp(opJeqImm, r0, 0, 68, "drop")
	a.jmp(opJa, 0, 0, 0, "pass")

	a.label("ipv6")
	a.op(opMovImm, r1, 0, 0, eth+40)
	a.jmp(opJgtReg, r1, r7, 0, "pass")
	a.op(opLdAbsB, 0, 0, 0, eth+6)
	a.op(opMovReg, r8, r0, 0, 0)     // r8 = next header
	a.op(opMovImm, r9, 0, 0, eth+40) // r9 = its offset
	for i := range 4 {
		ext, frag := fmt.Sprintf("ext-%d", i), fmt.Sprintf("frag-%d", i)
		if i == 3 {
			ext, frag = "drop", "drop" // a fourth extension header
		}
		a.label(fmt.Sprintf("hdr-%d", i))
		a.jmp(opJeqImm, r8, 0, 0, ext)   // hop-by-hop options
		a.jmp(opJeqImm, r8, 0, 43, ext)  // routing
		a.jmp(opJeqImm, r8, 0, 60, ext)  // destination options
		a.jmp(opJeqImm, r8, 0, 44, frag) // fragment
		a.jmp(opJa, 0, 0, 0, "l4")
		if i == 3 {
			break
		}
		// A fragment header is 8 bytes whatever its second byte says; a
		// fragment at a non-zero offset holds no upper-layer header.
		a.label(frag)
		a.op(opMovReg, r1, r9, 0, 0)
		a.op(opAddImm, r1, 0, 0, 4)
		a.jmp(opJgtReg, r1, r7, 0, "drop")
		a.op(opLdIndH, 0, r9, 0, 2)
		a.op(opAndImm, r0, 0, 0, 0xfff8)
		a.jmp(opJneImm, r0, 0, 0, "pass")
		a.op(opLdIndB, 0, r9, 0, 0)
		a.op(opMovReg, r8, r0, 0, 0)
		a.op(opAddImm, r9, 0, 0, 8)
		a.jmp(opJa, 0, 0, 0, fmt.Sprintf("hdr-%d", i+1))
		a.label(ext)
		a.op(opMovReg, r1, r9, 0, 0)
		a.op(opAddImm, r1, 0, 0, 2)
		a.jmp(opJgtReg, r1, r7, 0, "drop")
		a.op(opLdIndB, 0, r9, 0, 0)
		a.op(opMovReg, r8, r0, 0, 0)
		a.op(opLdIndB, 0, r9, 0, 1)
		a.op(opAddImm, r0, 0, 0, 1)
		a.op(opLshImm, r0, 0, 0, 3)
		a.op(opAddReg, r9, r0, 0, 0)
	}
	a.label("l4")
	a.op(opMovReg, r1, r9, 0, 0)
	a.op(opAddImm, r1, 0, 0, 2)
	a.jmp(opJgtReg, r1, r7, 0, "pass-or-drop")
	a.jmp(opJeqImm, r8, 0, unix.IPPROTO_ICMPV6, "icmp6")
	a.jmp(opJeqImm, r8, 0, unix.IPPROTO_UDP, "udp6")
	a.jmp(opJa, 0, 0, 0, "pass")
	a.label("icmp6")
	a.op(opLdIndB, 0, r9, 0, 0)
	a.jmp(opJeqImm, r0, 0, 134, "drop")
	a.jmp(opJeqImm, r0, 0, 137, "drop")
	a.jmp(opJa, 0, 0, 0, "pass")
	a.label("udp6")
	a.op(opMovReg, r1, r9, 0, 0)
	a.op(opAddImm, r1, 0, 0, 4)
	a.jmp(opJgtReg, r1, r7, 0, "drop") // UDP without its ports
	a.op(opLdIndH, 0, r9, 0, 0)
	a.jmp(opJeqImm, r0, 0, 547, "drop")
	a.op(opLdIndH, 0, r9, 0, 2)
	a.jmp(opJeqImm, r0, 0, 546, "drop")
	a.jmp(opJa, 0, 0, 0, "pass")
	// Too short for its ICMPv6 type or UDP ports: dropped if it claims to
	// be either, passed otherwise.
	a.label("pass-or-drop")
	a.jmp(opJeqImm, r8, 0, unix.IPPROTO_ICMPV6, "drop")
	a.jmp(opJeqImm, r8, 0, unix.IPPROTO_UDP, "drop")
	a.jmp(opJa, 0, 0, 0, "pass")
	return a.done()
}

// loadProg loads a direct-action tc classifier.
func loadProg(name string, insns []insn) (int, error) {
	if len(insns) == 0 {
		return -1, fmt.Errorf("%w: empty %s classifier", ErrInvalid, name)
	}
	license := []byte("GPL\x00")
	attr := struct {
		ProgType, InsnCnt  uint32
		Insns, License     uint64
		LogLevel, LogSize  uint32
		LogBuf             uint64
		KernVersion, Flags uint32
		Name               [16]byte
	}{ProgType: uint32(netlink.BPF_PROG_TYPE_SCHED_CLS), InsnCnt: uint32(len(insns)),
		Insns: uint64(uintptr(unsafe.Pointer(&insns[0]))), License: uint64(uintptr(unsafe.Pointer(&license[0])))}
	copy(attr.Name[:], name)
	fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_LOAD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	// The attribute holds the addresses as integers: keep both alive
	// until the kernel has read them.
	runtime.KeepAlive(insns)
	runtime.KeepAlive(license)
	if errno != 0 {
		return -1, fmt.Errorf("load the %s classifier: %w", name, errno)
	}
	return int(fd), nil
}
