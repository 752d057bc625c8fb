"""Golden integer model, float reference, Verilator runners and cocotb benches."""
