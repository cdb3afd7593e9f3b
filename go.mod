module yolk

// The image is built by tamago-go1.26.0, so the language version must not
// name a later Go release (the TamaGo go command would try to switch
// toolchains, which it cannot do offline).
go 1.26.0

tool github.com/usbarmory/tamago/cmd/tamago

require (
	github.com/stretchr/testify v1.12.1
	github.com/usbarmory/imx-enet v0.0.0-20240909221101-ae8625bf5b84
	github.com/usbarmory/tamago v1.26.0
	gonum.org/v1/plot v0.17.0
	gvisor.dev/gvisor v0.0.0-20260413194555-9680d69bf798
)

require (
	codeberg.org/go-fonts/liberation v0.5.0 // indirect
	codeberg.org/go-latex/latex v0.2.0 // indirect
	codeberg.org/go-pdf/fpdf v0.11.1 // indirect
	git.sr.ht/~sbinet/gg v0.7.0 // indirect
	github.com/ajstarks/svgo v0.0.0-20211024235047-1546f124cd8b // indirect
	github.com/golang/freetype v0.0.0-20170609003504-e2365dfdc4a0 // indirect
	github.com/google/btree v1.1.2 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/exp v0.0.0-20231110203233-9a3e6036ecaa // indirect
	golang.org/x/image v0.30.0 // indirect
	golang.org/x/sys v0.36.0 // indirect
	golang.org/x/text v0.29.0 // indirect
	golang.org/x/time v0.12.0 // indirect
)
