//go:build tamago && arm && mx6ullevk

package main

import "yolk/board/mx6ullevk"

var hw machine = mx6ullevk.Machine
