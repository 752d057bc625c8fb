# Thin wrapper: every target brings up the virtualenv itself, so a fresh clone needs no other step.
PYTHON   ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed
PEERS    := $(VENV)/.installed-peers
BOARD    ?= ulx3s-85f
LANES    ?= 16
# Lanes of make fpga: kjv's one MAC array at 64 lanes x 2 rows routes on the ULX3S 85F with
# nextpnr seed 2, 39.55 MHz post-route (docs/fpga.md); another netlist may need another seed.
FPGA_LANES ?= 64
FPGA_MATRIX_ROWS ?= 2
FPGA_SEED  ?= 2
# Element-wise units (the norm, RoPE, SwiGLU, attention output) of FPGA builds: 4 lanes, 2,937
# cycles per token at position 0 at 64 lanes x 2 rows (2 lanes: 3,561). One RMSNorm serves every
# norm, so its wide multipliers are few enough. The residual add, without multipliers, takes
# FPGA_LANES.
VECTOR_LANES ?= 4
# Design clock of make fpga (a PLL from the 25 MHz oscillator). kjv routed at this setting
# reaches 39.55 MHz post-route (docs/fpga.md); the margin covers other seeds.
FPGA_MHZ ?= 20
# UART of make fpga: 1 Mbaud divides 20 MHz exactly and carries 33,333 tokens/s (115,200 would
# carry 3,840, fewer than the design makes); talk to it with `hardwire chat kjv --lanes 64
# --matrix-rows 2 --vector-lanes 4 --baud 1000000 --port DEVICE`.
FPGA_BAUD ?= 1000000
MODEL    ?= kjv
OUT      ?= build/verilog
JOBS     ?= 2

.DEFAULT_GOAL := help
.PHONY: help setup corpus verilog sim test lint clean doctor bench fpga silicon

help:  ## show this help
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-9s %s\n",$$1,$$2}'
	@echo "  variables: MODEL=$(MODEL) LANES=$(LANES) VECTOR_LANES=$(VECTOR_LANES) FPGA_LANES=$(FPGA_LANES) FPGA_MATRIX_ROWS=$(FPGA_MATRIX_ROWS) FPGA_SEED=$(FPGA_SEED) FPGA_MHZ=$(FPGA_MHZ) FPGA_BAUD=$(FPGA_BAUD) (fpga) BOARD=$(BOARD) OUT=$(OUT) JOBS=$(JOBS)"

# Re-installs only when pyproject.toml changes (the stamp is newer otherwise).
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "hardwire needs Python >= 3.11, found $$($(PYTHON) --version)"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,fpga,bench]'
	touch $(STAMP)

setup: $(STAMP)  ## create/refresh the virtualenv in .venv (idempotent)

doctor: setup  ## print every tool's version and whether it works
	$(BIN)/hardwire doctor

verilog: setup  ## generate RTL for the bundled default model into $(OUT)
	$(BIN)/hardwire compile $(MODEL) --lanes $(LANES) --out $(OUT)

sim: setup  ## verify $(MODEL) on Verilator token by token, then the slow sweeps (marker: slow)
	$(BIN)/hardwire verify $(MODEL) --lanes $(LANES) --prompt "In the beginning" --prompt "And God said" --prompt "Jesus wept" -n 32
	$(BIN)/python -m pytest -n $(JOBS) -m slow

# worksteal: an idle worker takes queued tests from the busy one, so the long ones (the FPGA
# builds, the Verilator sweeps, the serial engine's simulations) do not end on a single worker.
test: setup corpus  ## run the whole test suite on $(JOBS) workers
	$(BIN)/python -m pytest -n $(JOBS) --dist worksteal -m "not slow"

# The training corpus (scripts/corpus.py) is the `bible` program of Debian's public-domain
# bible-kjv package; a bare machine gets it from apt (as root, else through sudo).
corpus:  ## install Debian's bible-kjv (the training corpus) when `bible` is missing
	@command -v bible >/dev/null || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get install -y -q bible-kjv >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q bible-kjv >/dev/null; }; }
	@command -v bible >/dev/null || { echo "make corpus: could not install Debian's bible-kjv"; exit 2; }

# llama.cpp (the benchmark's peer) builds from source: only `make bench` installs it.
$(PEERS): $(STAMP)
	CMAKE_BUILD_PARALLEL_LEVEL=$(JOBS) $(BIN)/python -m pip install --quiet -e '.[test,fpga,bench,peers]'
	touch $(PEERS)

bench: $(PEERS)  ## engines, lanes, llama.cpp, tool scaling, quality, fpga -> bench/results/ (hours)
	$(BIN)/hardwire bench $(MODEL) --lanes $(LANES)

# The iCEBreaker (iCE40 UP5K) takes the bundled micro model, int8, on the serial engine, its
# weights in SPRAM, read at power-up from the SPI flash (program the hardwire_weights.bin it
# writes at 1 MiB): in ROM they would need 58 of its 30 block RAMs (ternary fits, but keeps little).
ifeq ($(BOARD),icebreaker)
FPGA_BUILD = kjv-micro --engine serial --weights int8 --weight-store flash
else
FPGA_BUILD = $(MODEL) --lanes $(FPGA_LANES) --matrix-rows $(FPGA_MATRIX_ROWS) --vector-lanes $(VECTOR_LANES) --clock $(FPGA_MHZ) --baud $(FPGA_BAUD) --seed $(FPGA_SEED)
endif

fpga: setup  ## place-and-route $(MODEL) for $(BOARD) into build/fpga/$(BOARD) (BOARD=icebreaker: kjv-micro, serial, flash)
	$(BIN)/hardwire fpga $(FPGA_BUILD) --board $(BOARD) --out build/fpga/$(BOARD)

silicon: setup  ## mask-ROM chip estimate of $(MODEL) (yosys gate count, cited densities)
	$(BIN)/hardwire silicon $(MODEL) --lanes $(LANES)

lint: setup  ## ruff over the code
	$(BIN)/ruff check hardwire hdl gen sim tests scripts

clean:  ## remove build output (keeps .venv)
	rm -rf build sim_build .pytest_cache .hypothesis
