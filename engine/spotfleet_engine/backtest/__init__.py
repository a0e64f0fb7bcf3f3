"""The backtester: replay real spot price history and compare allocation strategies.

- :mod:`.prices`: the policy's candidate pools on the decision grid, exact
  per-second billing, market snapshots that hold only the past;
- :mod:`.interruptions`: the seeded reclaim stream shared by every strategy;
- :mod:`.traces`: bundled real availability traces (the package's only I/O);
- :mod:`.replay`: the replay loop (:func:`run`) and its results;
- :mod:`.report`: penalised cost, the summary table, sensitivity of the ranking;
- :mod:`.oracle`: the hindsight bound every strategy is measured against.

The strategies themselves live in :mod:`spotfleet_engine.strategies`.
"""

from spotfleet_engine.backtest.interruptions import InterruptionConfig as InterruptionConfig
from spotfleet_engine.backtest.replay import ReplayResult as ReplayResult
from spotfleet_engine.backtest.replay import Scoring as Scoring
from spotfleet_engine.backtest.replay import StrategyResult as StrategyResult
from spotfleet_engine.backtest.replay import run as run

__all__ = ["InterruptionConfig", "ReplayResult", "Scoring", "StrategyResult", "run"]
