package board

// Info is the portable description of a board: what the banner prints and
// what the selftest checks.
type Info struct {
	// Name is the build target (TARGET= in the Makefile).
	Name string
	// Model is the human name of the machine.
	Model string
	// Console names the UART that carries the console and result lines.
	Console string
	// Ethernet names the ENET controller the network stack is bound to, or
	// is empty when the board has none.
	Ethernet string
	// Memory is the physical memory map.
	Memory MemoryMap
}
