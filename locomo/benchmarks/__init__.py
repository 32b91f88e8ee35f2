"""What ``locomo bench`` (:mod:`locomo.commands.bench`) measures: samplers, trainers and the
default job's workload, each in a module of its own."""
