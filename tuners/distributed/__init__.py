"""The distributed machinery of a search, apart from the oracles and the trial runner.

- :mod:`tuners.distributed.chief`: serves any keras-tuner oracle over gRPC to worker groups,
  with leases, authentication, failure limits, progress and resume;
- :mod:`tuners.distributed.worker`: the worker side (a client of the chief standing in for the
  oracle on rank 0) and a stand-in worker whose trials are sleeps;
- :mod:`tuners.distributed.leases`: who holds which running trial, expiry and stall checks;
- :mod:`tuners.distributed.statelog`: the chief's ordered, durable log of search state, from
  which the oracle state, the leases, the re-issue queue and ``trials.jsonl`` follow.

The oracles (:mod:`tuners.asha`, keras-tuner's own) and the trial runner know nothing of it.
"""
