"""Model loading (front ends), quantization, compilation, Verilog emission and reports."""
