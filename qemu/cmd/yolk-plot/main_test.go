package main

import (
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"yolk/qemu/plot"
)

// A CSV yolk-qemu saved draws again as a PNG; one that is not a run's
// table is an error naming the file.
func TestReplotsASavedRun(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "run.csv")
	csv := "t_ms,free_kb,high_kb,pswpout\n0,4000,384,0\n1000,300,384,120\n2000,350,384,300\n"
	require.NoError(t, os.WriteFile(in, []byte(csv), 0o644))
	out := filepath.Join(dir, "run.png")
	require.NoError(t, run(in, out, "yolk test"))
	f, err := os.Open(out)
	require.NoError(t, err)
	defer f.Close()
	img, err := png.Decode(f)
	require.NoError(t, err)
	w, h := plot.Size(2) // free memory and swap I/O: the run has no other panel's fields
	assert.Equal(t, w, img.Bounds().Dx())
	assert.Equal(t, h, img.Bounds().Dy())

	bad := filepath.Join(dir, "bad.csv")
	require.NoError(t, os.WriteFile(bad, []byte("t_ms,free_kb\n5,1\n4,1\n"), 0o644))
	err = run(bad, filepath.Join(dir, "bad.png"), "t")
	assert.ErrorContains(t, err, bad+": plot: stat line 2: t_ms=4 is earlier than the line before's 5")
	assert.NoFileExists(t, filepath.Join(dir, "bad.png"))
}
