"""locomo: train MuJoCo humanoid walkers with the policy-gradient family."""

__version__ = "0.1.0"
