"""Amaranth components of the inference datapath.

Everything here receives plain integers and configuration objects: no numpy, no model code, so
each unit can be elaborated, simulated and reviewed on its own.
"""
