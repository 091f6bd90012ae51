"""Shared setup of the tests that run under ``horovodrun -np 2 --gloo`` (both ranks run pytest).

Both ranks collect and run the same tests in the same order, so their collective operations
pair up. One intra-op thread per rank (two ranks share the two cores).
"""

from __future__ import annotations

import shutil
import tempfile

import pytest
import tensorflow as tf

from mlpf_tf import distributed

try:
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
except RuntimeError:  # already initialised
    pass


@pytest.fixture(scope="session")
def ctx() -> distributed.Context:
    context = distributed.init()
    if context.size != 2:
        pytest.skip(f"needs horovodrun -np 2 (this process has {context.size} rank)")
    return context


@pytest.fixture
def shared_dir(ctx):
    """A fresh directory whose path every rank knows (rank 0 creates and removes it)."""
    path = tempfile.mkdtemp(prefix="mlpf-parallel-") if ctx.is_root else None
    path = distributed.broadcast_object(path)
    yield path
    distributed.barrier()
    if ctx.is_root:
        shutil.rmtree(path, ignore_errors=True)
