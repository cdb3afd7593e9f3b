//go:build tamago && arm && !mx6ullevk && !usbarmory

package main

// Exactly one board tag selects the machine (TARGET= in the Makefile).
var hw machine = build_with_tag_mx6ullevk_or_usbarmory
