"""Process nodes for :mod:`hardwire.gen.silicon`: the densities an area estimate multiplies by, each
with where it comes from.

Every figure is either quoted from a public source (``Figure.source``) or derived from quoted
figures by a stated rule (``Figure.derivation``); nothing here comes from a foundry PDK under NDA,
so the advanced-node figures are the published marketing/analysis numbers, not sign-off data.
"""

from dataclasses import dataclass

__all__ = ["Source", "Figure", "Node", "NODES", "DEFAULT_NODE", "PLACEMENT_UTILIZATION",
           "MEMORY_ARRAY_EFFICIENCY", "TAALAS_HC1"]


@dataclass(frozen=True)
class Source:
    title: str
    url: str

    def cite(self):
        return f"{self.title} <{self.url}>"


@dataclass(frozen=True)
class Figure:
    """A number, its unit and either a ``source`` or a ``derivation`` (or both)."""
    value: float
    unit: str
    source: Source | None = None
    derivation: str | None = None

    def why(self):
        parts = [self.derivation] if self.derivation else []
        if self.source is not None:
            parts.append(self.source.cite())
        return "; ".join(parts) if parts else "assumption"


@dataclass(frozen=True)
class Node:
    """A process node: ``logic_density`` (transistors per µm² of placed standard cells at 100 %
    utilization), ``rom_bit_area`` and ``sram_bit_area`` (µm² per bit, of the bit cell alone when
    ``*_is_macro`` is false, of a whole macro with its periphery when true)."""
    name: str
    title: str
    logic_density: Figure
    rom_bit_area: Figure
    sram_bit_area: Figure
    sram_is_macro: bool = False


_WIKICHIP_7NM = Source("WikiChip, 7 nm lithography process (TSMC: CPP 54 nm, MMP 40 nm, "
                       "HD SRAM bit cell 0.027 µm²)",
                       "https://en.wikichip.org/wiki/7_nm_lithography_process")
_N7_DENSITY = Source("WikiChip Fuse analysis of TSMC N5P vs N7, as reported: N7 91.2 MTr/mm² "
                     "(Optocrypto, 'TSMC N5P 5nm transition is 87% superior to 7nm')",
                     "https://optocrypto.com/tsmc-n5p-5nm-transition-is-87-superior-to-7nm-node-"
                     "in-terms-of-transistor-density")
_TSMC_7NM = Source("TSMC, 7nm Technology: N6 'delivers 18% higher logic density over the N7 "
                   "process', design rules compatible with N7",
                   "https://www.tsmc.com/english/dedicatedFoundry/technology/7nm.htm")
_SKY130_NAND2 = Source("SkyWater SKY130 sky130_fd_sc_hd__nand2_1 LEF: SIZE 1.38 BY 2.72 (µm)",
                       "https://github.com/google/skywater-pdk-libs-sky130_fd_sc_hd/blob/main/"
                       "cells/nand2/sky130_fd_sc_hd__nand2_1.lef")
_SKY130_TLEF = Source("SKY130 sky130_fd_sc_hd technology LEF: SITE unithd 0.46 BY 2.72, met1 "
                      "PITCH 0.34 (OpenROAD-flow-scripts platforms/sky130hd)",
                      "https://github.com/The-OpenROAD-Project/OpenROAD-flow-scripts/blob/"
                      "5bd5bff373868c9c70e59dd6eda2b9930167ddbf/flow/platforms/sky130hd/lef/"
                      "sky130_fd_sc_hd.tlef")
_SKY130_OPENRAM = Source("vsdsram_sky130: OpenRAM 1024 x 32 (32 kbit) single-port SRAM macro on "
                         "SKY130, area 534277 µm²",
                         "https://github.com/vsdip/vsdsram_sky130")

_ROM_RULE = ("1-transistor contact/via-programmed NOR ROM cell taken as 2 contacted gate pitches "
             "x 2 metal-1 pitches per bit")

NODES = {
    "sky130": Node(
        name="sky130", title="SkyWater SKY130 (130 nm, open PDK), sky130_fd_sc_hd cells",
        logic_density=Figure(4 / (1.38 * 2.72), "transistors/µm²", _SKY130_NAND2,
                             "4 transistors of a NAND2_1 over its 3.754 µm²"),
        rom_bit_area=Figure(2 * 0.46 * 2 * 0.34, "µm²/bit", _SKY130_TLEF,
                            f"{_ROM_RULE}, with the 0.46 µm placement site as the gate pitch"),
        sram_bit_area=Figure(534277 / 32768, "µm²/bit", _SKY130_OPENRAM,
                             "whole macro (bit cells, decoders, sense amplifiers) / 32768 bits"),
        sram_is_macro=True),
    "n7": Node(
        name="n7", title="TSMC N7 (7 nm FinFET, DUV)",
        logic_density=Figure(91.2, "transistors/µm²", _N7_DENSITY,
                             "91.2 MTr/mm² (NAND2/scan-flip-flop weighted library density)"),
        rom_bit_area=Figure(2 * 0.054 * 2 * 0.040, "µm²/bit", _WIKICHIP_7NM, _ROM_RULE),
        sram_bit_area=Figure(0.027, "µm²/bit", _WIKICHIP_7NM, "high-density 6T bit cell")),
    "n6": Node(
        name="n6", title="TSMC N6 (7 nm family with EUV layers; the Taalas HC1's node)",
        logic_density=Figure(91.2 * 1.18, "transistors/µm²", _TSMC_7NM,
                             "N7's 91.2 MTr/mm² x 1.18"),
        rom_bit_area=Figure(2 * 0.054 * 2 * 0.040, "µm²/bit", _WIKICHIP_7NM,
                            f"{_ROM_RULE}; N6 keeps N7's pitches"),
        sram_bit_area=Figure(0.027, "µm²/bit", _WIKICHIP_7NM,
                             "high-density 6T bit cell; N6 keeps N7's bit cell")),
}
DEFAULT_NODE = "sky130"

PLACEMENT_UTILIZATION = Figure(
    0.7, "fraction", None,
    "assumption: standard cells fill 70 % of the logic area, the rest is routing and filler "
    "(a common starting core utilization in open flows)")
MEMORY_ARRAY_EFFICIENCY = Figure(
    0.7, "fraction", None,
    "assumption: bit cells fill 70 % of a memory macro, the rest is decoders, sense amplifiers "
    "and drivers (applied to bit-cell figures, not to whole-macro figures)")

TAALAS_HC1 = {
    "chip": "Taalas HC1 (Llama 3.1 8B hard-wired)", "node": "n6", "transistors": 53e9,
    "area_mm2": 815.0,
    "source": Source("Ertas, 'Taalas HC1: What a Hardwired Llama Chip Means for Fine-Tuning' "
                     "(TSMC 6nm, 815 mm², 53 billion transistors; also The Next Platform, "
                     "2026-02-19)",
                     "https://www.ertas.ai/blog/taalas-hc1-hardwired-llama-fine-tuning"),
}
