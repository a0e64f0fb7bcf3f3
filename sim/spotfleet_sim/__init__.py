"""The stand-in cloud: moto's server app behind a market layer (prices, capacity, faults)."""

__version__ = "0.1.0"
