//go:build tamago && !linkramsize

package imx6ul

// yolk sets the Go runtime's RAM size itself (see ramSize); without the
// linkramsize tag TamaGo's board would define it too and the link would
// fail obscurely. Fail here instead, by name.
var _ = build_with_the_linkramsize_tag
