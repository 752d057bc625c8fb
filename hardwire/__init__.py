"""hardwire: quantized Llama-style decoders compiled to Verilog, weights as mask-ROM constants.

Subpackages:
    hardwire.gen  model front ends, quantizer, compiler, Verilog emission, reports
    hardwire.hdl  Amaranth components (never imports numpy or model code)
    hardwire.sim  golden integer model, float reference, cocotb benches and Verilator runners
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
