package mm

// itree is an interval tree: a treap ordered by interval start, each node
// augmented with the largest interval end in its subtree, as Linux's
// interval_tree_generic.h augments an rbtree. Two trees use it: an address
// space's VMAs (disjoint intervals of addresses, so "the first interval
// ending after x" is find_vma) and an anon_vma's chained VMAs (overlapping
// intervals of page offsets, searched by rmap walks).
//
// Nodes are embedded in the objects they index and carry a pointer back,
// so the tree allocates nothing. Intervals are closed: [start, last].
// Equal starts are ordered by insertion sequence, which keeps every node
// findable for removal. A treap's expected depth is O(log n) for any
// insertion order; its priorities come from a per-tree xorshift generator.
type itree[T any] struct {
	root *inode[T]
	n    int
	seq  uint64
	rnd  uint32
}

type inode[T any] struct {
	left, right *inode[T]
	start, last uint64
	max         uint64 // largest last in this subtree
	seq         uint64
	prio        uint32
	val         T
}

func (n *inode[T]) before(m *inode[T]) bool {
	return n.start < m.start || n.start == m.start && n.seq < m.seq
}

func (n *inode[T]) fix() {
	n.max = n.last
	if n.left != nil && n.left.max > n.max {
		n.max = n.left.max
	}
	if n.right != nil && n.right.max > n.max {
		n.max = n.right.max
	}
}

func rotateRight[T any](h *inode[T]) *inode[T] {
	l := h.left
	h.left, l.right = l.right, h
	h.fix()
	l.fix()
	return l
}

func rotateLeft[T any](h *inode[T]) *inode[T] {
	r := h.right
	h.right, r.left = r.left, h
	h.fix()
	r.fix()
	return r
}

func (t *itree[T]) random() uint32 {
	if t.rnd == 0 {
		t.rnd = 0x9e3779b9
	}
	x := t.rnd
	x ^= x << 13
	x ^= x >> 17
	x ^= x << 5
	t.rnd = x
	return x
}

// insert adds n, which is not in any tree, with interval [start, last].
func (t *itree[T]) insert(n *inode[T], start, last uint64, val T) {
	t.seq++
	*n = inode[T]{start: start, last: last, max: last, seq: t.seq, prio: t.random(), val: val}
	t.root = insertAt(t.root, n)
	t.n++
}

func insertAt[T any](h, n *inode[T]) *inode[T] {
	if h == nil {
		return n
	}
	if n.before(h) {
		h.left = insertAt(h.left, n)
		if h.left.prio > h.prio {
			return rotateRight(h)
		}
	} else {
		h.right = insertAt(h.right, n)
		if h.right.prio > h.prio {
			return rotateLeft(h)
		}
	}
	h.fix()
	return h
}

// remove takes n out of the tree; n must be in it.
func (t *itree[T]) remove(n *inode[T]) {
	t.root = removeAt(t.root, n)
	n.left, n.right = nil, nil
	t.n--
}

func removeAt[T any](h, n *inode[T]) *inode[T] {
	if h == nil {
		panic("mm: interval tree: removing a node that is not in the tree")
	}
	if h == n {
		return join(h.left, h.right)
	}
	if n.before(h) {
		h.left = removeAt(h.left, n)
	} else {
		h.right = removeAt(h.right, n)
	}
	h.fix()
	return h
}

// join merges two treaps, every node of a before every node of b.
func join[T any](a, b *inode[T]) *inode[T] {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	case a.prio > b.prio:
		a.right = join(a.right, b)
		a.fix()
		return a
	default:
		b.left = join(a, b.left)
		b.fix()
		return b
	}
}

// firstEndingAfter returns the first interval, in start order, whose last
// is ≥ x: for disjoint intervals, the one containing x or the next one.
func (t *itree[T]) firstEndingAfter(x uint64) *inode[T] {
	h := t.root
	for h != nil {
		switch {
		case h.left != nil && h.left.max >= x:
			h = h.left
		case h.last >= x:
			return h
		default:
			h = h.right
		}
	}
	return nil
}

// overlapping calls fn for every interval meeting [lo, hi], in start order,
// until fn returns false.
func (t *itree[T]) overlapping(lo, hi uint64, fn func(T) bool) {
	visitOverlapping(t.root, lo, hi, fn)
}

func visitOverlapping[T any](h *inode[T], lo, hi uint64, fn func(T) bool) bool {
	if h == nil || h.max < lo {
		return true
	}
	if !visitOverlapping(h.left, lo, hi, fn) {
		return false
	}
	if h.start > hi {
		return true
	}
	if h.last >= lo && !fn(h.val) {
		return false
	}
	return visitOverlapping(h.right, lo, hi, fn)
}

// check verifies order, augmentation and heap property, and returns the
// nodes in order.
func (t *itree[T]) check() ([]*inode[T], error) {
	var out []*inode[T]
	var walk func(h *inode[T]) error
	walk = func(h *inode[T]) error {
		if h == nil {
			return nil
		}
		if err := walk(h.left); err != nil {
			return err
		}
		if len(out) > 0 && !out[len(out)-1].before(h) {
			return errorf("interval tree out of order at [%#x, %#x]", h.start, h.last)
		}
		max := h.last
		for _, c := range []*inode[T]{h.left, h.right} {
			if c != nil && c.prio > h.prio {
				return errorf("interval tree heap order broken at [%#x, %#x]", h.start, h.last)
			}
			if c != nil && c.max > max {
				max = c.max
			}
		}
		if h.max != max {
			return errorf("interval tree max %#x at [%#x, %#x], want %#x", h.max, h.start, h.last, max)
		}
		out = append(out, h)
		return walk(h.right)
	}
	if err := walk(t.root); err != nil {
		return nil, err
	}
	if len(out) != t.n {
		return nil, errorf("interval tree has %d nodes, counts %d", len(out), t.n)
	}
	return out, nil
}
