"""The serial engine: a whole decoder on one shared datapath, for the smallest FPGAs."""

from .decoder import SerialDecoder

__all__ = ["SerialDecoder"]
