// Package shell is yolk's console shell: a prompt on the serial line where
// a person reads the memory manager's /proc and /sys files, changes its
// tunables and runs scenarios, in the words a Linux mm engineer would use
// (meminfo, buddyinfo, vmstat, sysctl vm.min_free_kbytes=N, echo never >
// /sys/kernel/mm/transparent_hugepage/enabled).
//
// It is portable Go: it reads bytes from an io.Reader and writes to an
// io.Writer, so the same code runs on the UART of either board and in a
// host test with a pipe. Two halves:
//
//   - The line editor (editor.go) is a serial line's n_tty in canonical
//     mode, with ECHO, ICRNL and ONLCR done here since the host terminal
//     is raw: printable ASCII is echoed and kept, backspace and DEL rub
//     out a character, Ctrl-U the line, Ctrl-C cancels it, CR, LF and CRLF
//     each end it, and the up and down arrows walk a short history. Other
//     escape sequences (CSI and SS3, as a terminal's other keys send) are
//     read to their end and dropped. A line longer than MaxLine, or one
//     holding bytes that are not printable ASCII, is refused whole with
//     one line saying why: nothing the line carried runs.
//   - The commands (shell.go) are a table. The /proc and /sys files are a
//     second table (files.go), so that `meminfo` and `cat /proc/meminfo`
//     are one thing, `sysctl vm.X` is /proc/sys/vm/X, and `echo V > F`
//     writes F with the same checks as sysctl. A bad command, argument or
//     value is one line on the console and the prompt again; nothing a
//     user types panics the image.
//
// What ps, maps and smaps show: the shell is a machine of its own on the
// pool it is given. New makes an mm.Manager there, swaps to a 16 MiB
// zram-style RAM device on the Go heap (/dev/zram0), and starts two
// tasks (tasks.go): init (PID 1) with a 64 KiB heap, four pages of it
// paged out to swap with MADV_PAGEOUT, and a 4 MiB anonymous area faulted
// as four huge pages (1 MiB sections), the last of them MADV_FREE'd whole,
// so it stays a huge page and is counted LazyFree; then init forks a
// child (PID 2) that writes one small page of the first section, which
// copies that page and maps the rest of the section with small pages in
// the child only. Everything the files show comes from those tasks and
// the pool's own counters; nothing is made up for display.
//
// `run SCENARIO` runs another scenario on the same pool. Scenarios bring
// their own memory manager, and a pool serves one at a time (it has a
// single reclaimer and a single LRU release hook), so the shell's tasks
// exit and its manager closes first, and both start again afterwards,
// on a new manager: PIDs from 1 and counters from zero, as after a
// reboot. The shell then says whether the pool got back every frame the
// scenario took.
//
// Locks: the shell runs on one goroutine; its only lock is the console
// writer's, since the manager's log (OOM kills, swapon) is written to
// the console from whichever goroutine logs, as it happens, like printk.
// mm and phys take their own.
package shell
