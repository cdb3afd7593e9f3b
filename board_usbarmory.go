//go:build tamago && arm && usbarmory

package main

import "yolk/board/usbarmory"

var hw machine = usbarmory.Machine
