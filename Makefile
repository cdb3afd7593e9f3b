# yolk: build, boot and test the image.
#
#   make                      build the image (build/yolk-mx6ullevk.elf); same as make image
#   make qemu                 build the image and boot it in QEMU: the tour of the whole machine (about 40 s)
#   make qemu APPEND='k=v'    ...with boot parameters, e.g. APPEND='scenario=journal'
#                             (a run with stat lines is plotted: PLOT=FILE.png, PLOT= for none)
#   make plot                 redraw docs/pressure.png, the README's picture, from a new nbdswap run
#   make shell                boot into the console shell (help lists its commands; exit [N] ends it)
#   make test                 gofmt, go vet, host tests (-race), then the QEMU tests
#   make bench                the benchmarks behind the README's figures (host, then the image's in QEMU)
#   make mutants [MUTANTS=RE] plant each bug in mutants/ and check that its tests catch it
#   make toolchain [TAMAGO_GO_SRC=tamago-go1.26.0.src.tar.gz]
#                             install the TamaGo toolchain if it is missing (image,
#                             qemu, imx and test-qemu do this first)
#   make image TARGET=usbarmory / make imx TARGET=usbarmory [CMDLINE='k=v']
#   make deps                 install the Debian packages the targets use (as root)
#
# QEMU, and the harness behind make qemu, exit with the scenario's status
# (0 pass, 1 fail, 2 bad parameters, 3 panic, 4 runtime crash, 5 stalled); make then
# reports it as "Error N".

SHELL := /bin/bash
comma := ,
.DEFAULT_GOAL := image

GO       ?= go
TARGET   ?= mx6ullevk
BUILD    ?= build
IMAGE    ?= $(BUILD)/yolk-$(TARGET).elf
BIN      ?= $(BUILD)/yolk-$(TARGET).bin
IMX      ?= $(BUILD)/yolk-$(TARGET).imx
APPEND   ?=
# Where the harness plots a run's stat lines (auto: yolk-SCENARIO.png beside the image).
PLOT     ?= auto
# Boot parameters built into the image, for boards without semihosting.
CMDLINE  ?=
QEMU_TIMEOUT ?= 180s

# TamaGo loads the image at ramStart + 64 KiB (the first 64 KiB hold its
# vector table and page tables); -R 0x1000 aligns sections to 4 KiB.
TEXT_START := 0x80010000
LDFLAGS     = -T $(TEXT_START) -R 0x1000 $(if $(CMDLINE),-X 'main.builtinCmdline=$(CMDLINE)')
# EXTRA_TAGS adds build tags to the image: yolk_drop_tlbi builds the live
# MMU with one TLB invalidation left out, to watch the mmu scenario fail.
EXTRA_TAGS ?=
TAGS       := $(TARGET),linkramsize$(if $(EXTRA_TAGS),$(comma)$(EXTRA_TAGS))
GOENV      := GOOS=tamago GOOSPKG=github.com/usbarmory/tamago GOARCH=arm GOARM=7

# The TamaGo Go distribution: `go tool tamago` (the tool directive in go.mod)
# runs it from the user cache directory, named after the tamago module
# version. make toolchain installs it there when it is missing: from
# TAMAGO_GO_SRC, a source archive of the tag, or else with upstream's
# installer over the network (qemu/cmd/yolk-toolchain).
TAMAGO_MOD  = $(shell $(GO) list -m -f '{{.Version}}' github.com/usbarmory/tamago)
TAMAGO_GO   = tamago-go$(patsubst v%,%,$(TAMAGO_MOD))
TAMAGO_GO_SRC ?=
TOOLCHAIN   = $(BUILD)/yolk-toolchain -version $(TAMAGO_GO) $(if $(TAMAGO_GO_SRC),-archive '$(abspath $(TAMAGO_GO_SRC))')
# `go tool -n` only prints the tool's path: the tool itself must run with
# GOOS=tamago in its environment, which the host go command rejects. These
# are expanded only by the recipes that use them, so that paths that do
# not build an image do not build the tool.
TAMAGO      = $(shell $(GO) tool -n github.com/usbarmory/tamago/cmd/tamago)
TAMAGO_DIR  = $(shell $(GO) list -m -f '{{.Dir}}' github.com/usbarmory/tamago)

ifeq ($(TARGET),usbarmory)
IMXCFG = $(TAMAGO_DIR)/board/usbarmory/mk2/imximage.cfg
else ifeq ($(TARGET),mx6ullevk)
IMXCFG = $(TAMAGO_DIR)/board/nxp/mx6ullevk/imximage.cfg
else
$(error TARGET=$(TARGET) is not a board: use mx6ullevk or usbarmory)
endif

# Debian packages for each host command the targets use.
PKG_qemu-system-arm       := qemu-system-arm
PKG_mkimage               := u-boot-tools
PKG_arm-none-eabi-objcopy := binutils-arm-none-eabi
# The NBD servers the blk tests and benchmarks run against, and libnbd's
# tools (nbdinfo, nbdcopy) they compare with.
PKG_nbdkit                := nbdkit
PKG_qemu-nbd              := qemu-utils
PKG_nbd-server            := nbd-server
PKG_nbdcopy               := libnbd-bin
NBD_CMDS                  := nbdkit qemu-nbd nbd-server nbdcopy

.PHONY: image imx qemu shell test check-fmt vet test-host test-qemu qemu-tests bench bench-qemu mutants deps clean toolchain toolchain-tool harness

# The installer and the harness are built, not run with go run, so that
# their exit statuses reach make (go run turns every failure into 1).
toolchain-tool:
	@mkdir -p $(BUILD)
	@$(GO) build -o $(BUILD)/yolk-toolchain ./qemu/cmd/yolk-toolchain

harness:
	@mkdir -p $(BUILD)
	@$(GO) build -o $(BUILD)/yolk-qemu ./qemu/cmd/yolk-qemu

# Does nothing when the toolchain is installed; otherwise builds it (about
# 5 minutes on 2 cores) into a directory beside the final one, renamed into
# place only once its go command works.
toolchain: toolchain-tool
	@$(TOOLCHAIN)

image: toolchain
	@mkdir -p $(dir $(IMAGE))
	$(GOENV) $(TAMAGO) build -tags $(TAGS) -trimpath -ldflags "$(LDFLAGS)" -o $(IMAGE) .

# A raw binary of the loadable sections, then an i.MX boot image: IVT, boot
# data and the board's DCD (DDR setup) from TamaGo's imximage.cfg, made by
# mkimage; the IVT entry is then set to the ELF entry point.
imx: image
	@$(MAKE) --no-print-directory deps CMDS="arm-none-eabi-objcopy mkimage"
	arm-none-eabi-objcopy -j .text -j .rodata -j .shstrtab -j .typelink \
	  -j .itablink -j .gopclntab -j .go.buildinfo -j .go.module -j .noptrdata -j .data \
	  -j .bss --set-section-flags .bss=alloc,load,contents \
	  -j .noptrbss --set-section-flags .noptrbss=alloc,load,contents \
	  $(IMAGE) -O binary $(BIN)
	mkimage -n $(IMXCFG) -T imximage -e $(TEXT_START) -d $(BIN) $(IMX)
	dd if=$(IMAGE) of=$(IMX) bs=1 count=4 skip=24 seek=4 conv=notrunc status=none
	@echo "yolk: $(IMX) is ready (see README for writing it to a microSD card)"

qemu: image harness
	@$(MAKE) --no-print-directory deps CMDS="qemu-system-arm nbdkit"
	$(BUILD)/yolk-qemu -image $(IMAGE) -target $(TARGET) -timeout $(QEMU_TIMEOUT) -plot '$(PLOT)' $(APPEND)

# The README's picture: swap over NBD with the flood, plotted from a new
# run into docs/pressure.png, with docs/pressure.csv its data.
PLOT_APPEND := scenario=nbdswap flood_kbps=512
.PHONY: plot
plot:
	@$(MAKE) --no-print-directory qemu APPEND='$(PLOT_APPEND)' PLOT=docs/pressure.png

# The console shell, on this terminal: the guest echoes, Ctrl-C cancels a
# line, exit [N] ends the run with status N, Ctrl-A x leaves QEMU. A
# person at a prompt needs no deadline but a day's (make qemu
# APPEND=shell gets the same).
SHELL_TIMEOUT := 24h
ifneq ($(filter shell scenario=shell,$(APPEND)),)
QEMU_TIMEOUT := $(SHELL_TIMEOUT)
endif
shell: image harness
	@$(MAKE) --no-print-directory deps CMDS="qemu-system-arm"
	$(BUILD)/yolk-qemu -image $(IMAGE) -target $(TARGET) -timeout $(SHELL_TIMEOUT) shell $(APPEND)

test: check-fmt vet test-host test-qemu

check-fmt:
	@out=$$(gofmt -l $$(find . -name '*.go' -not -path './build/*')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# Every package but the QEMU end-to-end tests in ./tests; then the tests
# that count allocations again without the race detector, which makes
# such counts meaningless (blk/nbd's skips under it); then mm/phys's
# reserve and concurrency tests again in a debug build (the invariant
# checker after every allocation and free), and the figures that tests
# measure and print (go test shows logs only with -v): fragmentation, and
# mm's property test at full length (a million steps, and 3000 a stream
# over nbdkit; the race build runs fewer) with the endless fork chain.
test-host:
	@$(MAKE) --no-print-directory deps CMDS="$(NBD_CMDS)"
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -vx 'yolk/tests')
	$(GO) test -count=1 -run 'Allocations|AllocatesNothing' ./blk/nbd ./runtime/workqueue ./net/rx
	$(GO) test -count=1 -tags yolk_debug -run 'Reserve|Throttle|Every|Compound|BadFrees|Concurrent' ./mm/phys
	@set -o pipefail; $(GO) test -count=1 -run 'TestFragmentation$$' -v ./mm/phys | grep -E 'fragmentation:|^(ok|FAIL)'
	@set -o pipefail; $(GO) test -count=1 -run 'TestModel$$|TestModelOverNBD$$|TestEndlessForkChain$$' -v ./mm/vmcheck ./mm | grep -E 'model:|nbdkit-[a-z0-9-]*: map|endless fork chain:|^(ok|FAIL)'
	@set -o pipefail; $(GO) test -count=1 -run 'TestCrashStates$$|TestCrashStatesTwoRounds$$|TestCrashDuringRecovery$$|TestCommitStalls|TestCommitCompletes' -v ./blk/journal | grep -E 'workload:|crash states:|recovered:|stopped:|crashed in|stalled as expected|rescuer ran|^(ok|FAIL)'

# The QEMU end-to-end tests need the TamaGo toolchain to build the images:
# it is installed first when it can be (an archive in TAMAGO_GO_SRC, or
# network access); without either, one SKIP: line says so.
test-qemu: toolchain-tool
	@st=0; $(TOOLCHAIN) -skip 'QEMU tests' || st=$$?; \
	case $$st in \
	  0) $(MAKE) --no-print-directory qemu-tests ;; \
	  3) ;; \
	  *) exit $$st ;; \
	esac

qemu-tests:
	@$(MAKE) --no-print-directory deps CMDS="qemu-system-arm mkimage arm-none-eabi-objcopy nbdkit"
	$(MAKE) --no-print-directory image TARGET=mx6ullevk
	$(MAKE) --no-print-directory imx TARGET=usbarmory
	$(GOENV) $(TAMAGO) vet -tags mx6ullevk,linkramsize . ./board/... ./runtime/... ./net/... ./mm/... ./blk/...
	$(GOENV) $(TAMAGO) vet -tags usbarmory,linkramsize . ./board/...
	YOLK_IMAGE=$(abspath $(BUILD))/yolk-mx6ullevk.elf YOLK_IMAGE_USBARMORY=$(abspath $(BUILD))/yolk-usbarmory.elf \
	YOLK_IMX=$(abspath $(BUILD))/yolk-usbarmory.imx \
	  $(GO) test -race -count=1 -v -timeout 15m ./tests/

# The host benchmarks, then the image's under QEMU (two at a time): the
# nbdswap min_free_kbytes sweep and Gorman's test, each once, when the
# TamaGo toolchain is there or can be installed (one SKIP: line otherwise).
bench: toolchain-tool
	@$(MAKE) --no-print-directory deps CMDS="$(NBD_CMDS)"
	$(GO) test -run '^$$' -bench . -benchmem $$($(GO) list ./... | grep -vx 'yolk/tests')
	@st=0; $(TOOLCHAIN) -skip 'QEMU benchmarks' || st=$$?; \
	case $$st in \
	  0) $(MAKE) --no-print-directory bench-qemu ;; \
	  3) ;; \
	  *) exit $$st ;; \
	esac

bench-qemu:
	@$(MAKE) --no-print-directory deps CMDS="qemu-system-arm nbdkit"
	$(MAKE) --no-print-directory image TARGET=mx6ullevk
	YOLK_IMAGE=$(abspath $(BUILD))/yolk-mx6ullevk.elf $(GO) test -count=1 -run '^$$' -bench 'NBDSwap|Gorman' -benchtime=1x -timeout 20m ./tests/

# The tests' own test: each planted bug in mutants/*.patch is applied to a
# scratch copy of the tree and must make the tests named beside it fail
# (yolk-mutants; not part of make test). MUTANTS selects some by name.
MUTANTS ?=
mutants:
	@$(MAKE) --no-print-directory deps CMDS="$(NBD_CMDS)"
	@mkdir -p $(BUILD)
	@$(GO) build -o $(BUILD)/yolk-mutants ./mutants
	$(BUILD)/yolk-mutants $(if $(MUTANTS),-run '$(MUTANTS)')

# Install the Debian packages behind CMDS (default: all) when they are
# missing: with apt-get as root, else name them and fail.
CMDS ?= qemu-system-arm mkimage arm-none-eabi-objcopy $(NBD_CMDS)
deps:
	@missing=""; for c in $(CMDS); do \
	  command -v $$c >/dev/null || missing="$$missing $$(make -s --no-print-directory pkg-$$c)"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "yolk: installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
	  echo "yolk: missing Debian packages:$$missing (install them with apt-get as root)" >&2; exit 1; \
	fi

pkg-%:
	@echo $(PKG_$*)

clean:
	rm -rf $(BUILD)
