"""A command's configuration: its schema, the rules of its keys, and the command line composed
into it and checked before anything runs.

- :mod:`~locomo.config.schema`: every command's keys (Hydra structured configs), register_configs.
- :mod:`~locomo.config.rules`: the rules of each key and section; :mod:`~locomo.config.validation`:
  each command's check of its composed config.
- :mod:`~locomo.config.overrides`: the overrides as Hydra's grammar reads them, a sweep's jobs.
- :mod:`~locomo.config.composition`: the config composed before Hydra's app runs, each job checked.
- :mod:`~locomo.config.composition_errors`: Hydra's error as one line, with did-you-mean.
- :mod:`~locomo.config.preflight`: a training config's model and memory, checked before anything
  big is allocated.

Nothing is imported here: ``import locomo.cli`` stays free of torch and MuJoCo.
"""
