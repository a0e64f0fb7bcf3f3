"""spotfleet's pure decision engine: no I/O, no clock, no globals.

Everything here takes its inputs as arguments (including ``now``) so the live
operator, ``spotfleet recommend`` and every backtest strategy run the same code.
"""

__version__ = "0.1.0"
