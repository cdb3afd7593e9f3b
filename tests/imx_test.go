package tests

import (
	"debug/elf"
	"encoding/binary"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/board/usbarmory"
)

// ivt is the i.MX Image Vector Table at the start of a .imx file (IMX6ULLRM
// 8.7.1.1 Image Vector Table structure): a header (tag 0xD1, big-endian
// length 0x20, version 0x40 or 0x41) and little-endian pointers.
type ivt struct {
	Tag      uint8
	Length   uint16
	Version  uint8
	Entry    uint32
	DCD      uint32
	BootData uint32
	Self     uint32
	CSF      uint32
}

func parseIVT(b []byte) ivt {
	return ivt{
		Tag:      b[0],
		Length:   binary.BigEndian.Uint16(b[1:3]),
		Version:  b[3],
		Entry:    binary.LittleEndian.Uint32(b[4:8]),
		DCD:      binary.LittleEndian.Uint32(b[12:16]),
		BootData: binary.LittleEndian.Uint32(b[16:20]),
		Self:     binary.LittleEndian.Uint32(b[20:24]),
		CSF:      binary.LittleEndian.Uint32(b[24:28]),
	}
}

func TestIMXHeader(t *testing.T) {
	imx := needImage(t, "YOLK_IMX", "imx", "usbarmory", ".imx")
	// `make imx` leaves the ELF it was made from beside the .imx.
	elfPath := imx[:len(imx)-len(".imx")] + ".elf"
	raw, err := os.ReadFile(imx)
	require.NoError(t, err)
	require.Greater(t, len(raw), 4096)

	h := parseIVT(raw)
	assert.Equal(t, uint8(0xd1), h.Tag, "IVT tag")
	assert.Equal(t, uint16(0x20), h.Length, "IVT length")
	assert.Contains(t, []uint8{0x40, 0x41}, h.Version, "IVT version")

	f, err := elf.Open(elfPath)
	require.NoError(t, err)
	defer f.Close()
	assert.Equal(t, uint32(f.Entry), h.Entry, "IVT entry is the ELF entry point")
	rt := usbarmory.Layout.Memory.Runtime
	assert.True(t, uint64(h.Entry) >= rt.Start && uint64(h.Entry) < rt.End(), "entry %#x outside the runtime region", h.Entry)

	// The pointers are consistent: the DCD and boot data follow the IVT
	// in the same loaded image; mkimage points the CSF (where a HAB
	// signature would go) just past the image.
	assert.Greater(t, h.DCD, h.Self)
	assert.Greater(t, h.BootData, h.Self)
	assert.GreaterOrEqual(t, uint64(h.CSF), uint64(h.Self)+uint64(len(raw)), "CSF inside the image")
	bd := int(h.BootData - h.Self)
	require.Less(t, bd+8, len(raw))
	start := binary.LittleEndian.Uint32(raw[bd:])
	length := binary.LittleEndian.Uint32(raw[bd+4:])
	assert.LessOrEqual(t, start, h.Self, "boot data start")
	assert.GreaterOrEqual(t, uint64(length), uint64(len(raw)), "boot data covers the whole image")
	dcd := int(h.DCD - h.Self)
	assert.Equal(t, uint8(0xd2), raw[dcd], "DCD tag")
}
