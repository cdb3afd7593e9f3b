// Package plot draws a pressure run: the image's once-a-second stat
// lines (`yolk: stat free_kb=... t_ms=...`, printed by the pressure,
// nbdswap and region scenarios, and by the tour that runs them) as a PNG
// of stacked panels on one time axis, so that reclaim can be watched
// rather than read.
//
// The panels, top to bottom, and what to look for in them:
//
//   - free memory and the pool's watermarks (free_kb; min_kb, low_kb,
//     high_kb dashed). Under pressure MemFree falls to low, where kswapd
//     wakes, and hovers between min and high while reclaim keeps up; a
//     dip below min is direct reclaim's and the reserve's territory.
//     The y axis stops at four times high when MemFree goes higher (at
//     the start, the whole pool), so that the band shows.
//   - the LRU lists (active_kb, inactive_kb, lazyfree_kb): the working
//     set moving between the lists, and MADV_FREE'd pages waiting on the
//     file list until reclaim discards them without I/O.
//   - swap in use (swap_used_kb), and swap I/O: pswpout and pswpin as
//     pages per second, the differences of vmstat's counters between
//     consecutive stat lines over the time between them.
//   - the page cache of journaled regions (region): Cached, Dirty and
//     Writeback, and block I/O as pgpgin and pgpgout per second.
//   - the receive path (nbdswap only): frames of received data charged
//     to the pool, how many of them came from the reserve and the
//     reserve's peak; and frames dropped before the stack saw them, by
//     reason, cumulative.
//
// The data comes first: [FromResults] turns a run's result lines into a
// [Stats] table, refusing malformed stat lines with an error that names
// the line, and [Build] turns the table into a [Figure], the series each
// panel draws, which tests check without looking at pixels. A field no
// stat line carries is left out of its panel (the panel's title says so)
// and a panel with none of its fields is left out of the figure (the
// figure's head says so): nothing absent is drawn as zero. Only then does
// [Figure.WritePNG] draw, with gonum.org/v1/plot. [Figure.Save] writes
// the PNG and, beside it, the table as CSV for plotting again with
// anything else.
//
// The package is the harness's (qemu/cmd/yolk-qemu -plot) and runs on
// the host only; the image never links it.
package plot
