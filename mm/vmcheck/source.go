package vmcheck

// Bytes is a Source reading the fuzzer's input: each choice consumes bytes
// of it, and when it runs out every choice is 0.
type Bytes struct {
	Data []byte
	used int
}

// Intn implements Source.
func (b *Bytes) Intn(n int) int {
	if n <= 1 {
		return 0
	}
	var v int
	for k := n - 1; k > 0; k >>= 8 {
		if b.used < len(b.Data) {
			v = v<<8 | int(b.Data[b.used])
			b.used++
		} else {
			v <<= 8
		}
	}
	return v % n
}

// Exhausted reports whether every byte has been used.
func (b *Bytes) Exhausted() bool { return b.used >= len(b.Data) }
