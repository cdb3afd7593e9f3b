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
)

require (
	github.com/google/btree v1.1.2 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/exp v0.0.0-20231110203233-9a3e6036ecaa // indirect
	golang.org/x/sys v0.36.0 // indirect
	golang.org/x/time v0.12.0 // indirect
	gvisor.dev/gvisor v0.0.0-20260413194555-9680d69bf798 // indirect
)
