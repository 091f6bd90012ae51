"""The simulated cluster: replay hyperparameter searches on recorded or modelled learning curves.

``engine``  event-driven cluster of workers driven by a real keras-tuner oracle
``curves``  learning-curve sources (recorded table, parametric surrogate, a finished run)
``record``  record a curve table by training real configurations
``replay``  the command line: simulate searches per tuner, workers and seed, and compare them
"""
