"""FPGA boards hardwire builds for: their ``amaranth-boards`` platforms, clocks, resources, and
the clock tree (PLL, power-on reset) around :class:`hardwire.hdl.board_top.BoardTop`.

PLL settings come from the YoWASP ``ecppll`` / ``icepll`` tools, which pick the dividers closest
to the requested frequency; the achieved frequency is what the design is constrained to.
"""

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from amaranth.hdl import ClockDomain, ClockSignal, Instance, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import Component

from ..errors import ConfigError, ToolchainError

__all__ = ["Board", "BOARDS", "board_named", "PLL", "plan_pll", "BoardSystem"]


@dataclass(frozen=True)
class Board:
    """A board: ``platform`` (an ``amaranth_boards`` class name in ``module``), its oscillator in
    MHz, the PLL kind (``"ecp5"``, ``"ice40"``), the clock range the PLL can make, and the
    resources reported, as ``(label, nextpnr cell type)``; the bitstream file suffix; the ECP5's
    MULT18X18D blocks, which the build shares out among the multipliers
    (:mod:`hardwire.gen.dsp_allocation`; ``None``: yosys maps them all, as on the iCE40)."""
    name: str
    module: str
    platform: str
    family: str
    osc_mhz: float
    clock_range: tuple
    resources: tuple
    bitstream: str
    leds: int
    dsp_blocks: int | None = None

    def make_platform(self):
        import importlib
        return getattr(importlib.import_module(self.module), self.platform)()


BOARDS = {
    "ulx3s-85f": Board(
        name="ulx3s-85f", module="amaranth_boards.ulx3s", platform="ULX3S_85F_Platform",
        family="ecp5", osc_mhz=25.0, clock_range=(10.0, 400.0),
        resources=(("LUT4", "TRELLIS_COMB"), ("FF", "TRELLIS_FF"),
                   ("block RAM (18 kbit)", "DP16KD"), ("distributed RAM", "TRELLIS_RAMW"),
                   ("DSP (18x18)", "MULT18X18D")),
        bitstream="bit", leds=8, dsp_blocks=156),
    "icebreaker": Board(
        name="icebreaker", module="amaranth_boards.icebreaker", platform="ICEBreakerPlatform",
        family="ice40", osc_mhz=12.0, clock_range=(16.0, 275.0),
        resources=(("logic cell (LUT4+FF)", "ICESTORM_LC"), ("block RAM (4 kbit)", "ICESTORM_RAM"),
                   ("SPRAM (256 kbit)", "ICESTORM_SPRAM"), ("DSP (16x16)", "ICESTORM_DSP")),
        bitstream="bin", leds=2),
}


def board_named(name):
    try:
        return BOARDS[name]
    except KeyError:
        raise ConfigError(f"unknown board {name!r} (expected one of "
                          f"{', '.join(BOARDS)})") from None


@dataclass(frozen=True)
class PLL:
    """PLL dividers (``params``: Instance parameters) and the frequency they give."""
    mhz: float
    params: dict


def _run_pll_tool(argv):
    with tempfile.TemporaryDirectory() as tmp:
        try:
            proc = subprocess.run([*argv, "-f", "pll.v"], cwd=tmp, capture_output=True,
                                  text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ToolchainError(f"{argv[0]} failed to run: {exc}") from None
        out = Path(tmp, "pll.v")
        if proc.returncode != 0 or not out.is_file():
            raise ToolchainError(f"{' '.join(argv)} failed: {(proc.stdout + proc.stderr)[-500:]}")
        return proc.stdout, out.read_text()


def plan_pll(board, mhz, tool_path):
    """The :class:`PLL` for ``mhz`` on ``board`` (``None`` when ``mhz`` is the oscillator's)."""
    if mhz == board.osc_mhz:
        return None
    low, high = board.clock_range
    if not low <= mhz <= high:
        raise ConfigError(f"--clock {mhz:g} MHz is outside what the {board.name} PLL makes "
                          f"({low:g} to {high:g} MHz)")
    if board.family == "ecp5":
        stdout, text = _run_pll_tool([tool_path, "-i", f"{board.osc_mhz:g}", "-o", f"{mhz:g}"])
        params = {k: int(v) for k, v in re.findall(
            r"\.(CLKI_DIV|CLKOP_DIV|CLKOP_CPHASE|CLKFB_DIV)\((\d+)\)", text)}
        got = float(re.search(r"clkout0 frequency: ([\d.]+) MHz", stdout).group(1))
    else:
        stdout, text = _run_pll_tool([tool_path, "-i", f"{board.osc_mhz:g}", "-o", f"{mhz:g}",
                                      "-m"])
        params = {k: int(v) for k, v in re.findall(
            r"\.(DIVR|DIVF|DIVQ|FILTER_RANGE)\([^)]*\)\s*,?\s*//\s*\w+\s*=\s*(\d+)", text)}
        if "FILTER_RANGE" not in params:
            params["FILTER_RANGE"] = int(re.search(r"FILTER_RANGE: (\d+)", stdout).group(1))
        got = float(re.search(r"F_PLLOUT:\s+([\d.]+) MHz \(achieved\)", stdout).group(1))
    return PLL(mhz=got, params=params)


class BoardSystem(Component):
    """A :class:`~hardwire.hdl.board_top.BoardTop` on a board: the ``sync`` clock from the
    oscillator (through ``pll`` when given), reset held until the PLL locks and for 20 µs
    after configuration (iCE40 block RAM reads zeros for ~3 µs), UART 0 to the host, the
    status on the first LEDs (busy, context_full, error, link_error) and, for a top that reads
    its weights from flash, the SPI flash (``wp`` and ``hold`` inactive)."""

    def __init__(self, *, top, board, pll):
        self._top, self._board, self._pll = top, board, pll
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        board, pll = self._board, self._pll
        clk_port = platform.request(platform.default_clk, dir="-")
        m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_port)
        clk = Signal()
        locked = Signal(init=1)
        mhz = board.osc_mhz
        if pll is None:
            m.d.comb += clk.eq(clk_buf.i)
        elif board.family == "ecp5":
            mhz = pll.mhz
            p = pll.params
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{board.osc_mhz:g}", a_FREQUENCY_PIN_CLKOP=f"{mhz:g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
                a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
                p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
                p_CLKI_DIV=p["CLKI_DIV"], p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p["CLKOP_DIV"],
                p_CLKOP_CPHASE=p["CLKOP_CPHASE"], p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
                p_CLKFB_DIV=p["CLKFB_DIV"],
                i_RST=0, i_STDBY=0, i_CLKI=clk_buf.i, o_CLKOP=clk, i_CLKFB=clk,
                i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
                i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=locked)
        else:
            mhz = pll.mhz
            p = pll.params
            m.submodules.pll = Instance(
                "SB_PLL40_CORE", p_FEEDBACK_PATH="SIMPLE", p_DIVR=p["DIVR"], p_DIVF=p["DIVF"],
                p_DIVQ=p["DIVQ"], p_FILTER_RANGE=p["FILTER_RANGE"],
                i_RESETB=1, i_BYPASS=0, i_REFERENCECLK=clk_buf.i, o_PLLOUTCORE=clk,
                o_LOCK=locked)

        m.domains.sync = ClockDomain("sync")
        m.domains.por = ClockDomain("por", reset_less=True, local=True)
        m.d.comb += [ClockSignal("sync").eq(clk), ClockSignal("por").eq(clk)]
        delay = int(20e-6 * mhz * 1e6)
        timer = Signal(range(delay + 1))
        done = Signal()
        with m.If(timer == delay):
            m.d.por += done.eq(1)
        with m.Else():
            m.d.por += timer.eq(timer + 1)
        m.submodules.reset_sync = ResetSynchronizer(~done | ~locked, domain="sync")
        platform.add_clock_constraint(clk, mhz * 1e6)

        m.submodules.top = top = self._top
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx_buf = io.Buffer("o", uart.tx)
        m.d.comb += [top.rx.eq(rx_buf.i), tx_buf.o.eq(top.tx)]
        if top.loader is not None:
            self._flash(m, platform, top)
        status = [top.busy, top.context_full, top.error, top.link_error]
        for n, flag in enumerate(status[:board.leds]):
            m.submodules[f"led{n}"] = led = io.Buffer("o", platform.request("led", n, dir="-"))
            m.d.comb += led.o.eq(flag)
        return m

    def _flash(self, m, platform, top):
        # The configuration flash: free for the design once the FPGA has configured.
        flash = platform.request("spi_flash_1x", 0, dir="-")
        for name, pin, value in (("cs", flash.cs, top.flash_cs), ("clk", flash.clk, top.flash_sck),
                                 ("copi", flash.copi, top.flash_copi), ("wp", flash.wp, 0),
                                 ("hold", flash.hold, 0)):
            m.submodules[f"flash_{name}"] = buffer = io.Buffer("o", pin)
            m.d.comb += buffer.o.eq(value)
        m.submodules.flash_cipo = cipo = io.Buffer("i", flash.cipo)
        m.d.comb += top.flash_cipo.eq(cipo.i)
