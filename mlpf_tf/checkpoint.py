"""Trial checkpoints: model weights, optimizer state (incl. its step counter) and the epoch.

Layout under a checkpoint directory (one per trial)::

    <dir>/epoch-0004/ckpt.index, ckpt.data-*, meta.json   one complete checkpoint
    <dir>/latest                                          name of the newest one ("epoch-0004")

A checkpoint is written into a temporary sibling directory and renamed into place, then the
``latest`` pointer is replaced atomically, so a crash at any moment leaves either the previous
checkpoint or the new one readable, never half of one. Only rank 0 writes; every rank may read
(the caller broadcasts from rank 0 afterwards).

``epoch`` is the number of epochs completed; training resumes at that epoch index.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from typing import Any

import tensorflow as tf

from mlpf_tf import distributed
from mlpf_tf.configbase import atomic_write_text

LATEST = "latest"
PREFIX = "ckpt"
META = "meta.json"
_NAME_RE = re.compile(r"^epoch-(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or does not fit the model; names the path."""


def checkpoint_name(epoch: int) -> str:
    return f"epoch-{epoch:04d}"


def _trackable(model: tf.keras.Model, optimizer, epoch: tf.Variable) -> tf.train.Checkpoint:
    return tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch)


def build_optimizer(model: tf.keras.Model, optimizer) -> None:
    """Create the optimizer's slot variables and step counter now (Keras does it lazily)."""
    optimizer.build(model.trainable_variables)


def save(directory: str, model: tf.keras.Model, optimizer, epoch: int, *,
         metadata: dict[str, Any] | None = None, keep: int = 2,
         ctx: distributed.Context | None = None) -> str:
    """Write checkpoint ``epoch`` into ``directory`` (rank 0 only) and return its path.

    Every rank gets the same path back; other ranks write nothing. ``keep`` newest checkpoints
    are kept, older ones removed after the pointer moved on.
    """
    ctx = ctx if ctx is not None else distributed.current()
    name = checkpoint_name(epoch)
    final = os.path.join(directory, name)
    if not ctx.is_root:
        return final
    os.makedirs(directory, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=directory, prefix=f".tmp-{name}-")
    try:
        epoch_var = tf.Variable(epoch, dtype=tf.int64, trainable=False)
        _trackable(model, optimizer, epoch_var).write(os.path.join(tmp, PREFIX))
        meta = {"epoch": int(epoch), **(metadata or {})}
        with open(os.path.join(tmp, META), "w") as fh:
            json.dump(meta, fh, indent=1, sort_keys=True, default=float)
            fh.flush()
            os.fsync(fh.fileno())
        if os.path.exists(final):  # re-training the same epoch: swap the old one out
            old = tempfile.mkdtemp(dir=directory, prefix=f".old-{name}-")
            os.replace(final, os.path.join(old, name))
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(os.path.join(directory, LATEST), name + "\n")
    _prune(directory, keep, protect=name)
    return final


def _prune(directory: str, keep: int, protect: str) -> None:
    names = sorted(n for n in os.listdir(directory) if _NAME_RE.match(n))
    stale = [n for n in names if n != protect][: max(0, len(names) - keep)]
    for n in stale:
        shutil.rmtree(os.path.join(directory, n), ignore_errors=True)


def latest(directory: str) -> str | None:
    """Path of the newest checkpoint under ``directory`` per its ``latest`` pointer, or None."""
    pointer = os.path.join(directory, LATEST)
    if not os.path.isfile(pointer):
        return None
    with open(pointer) as fh:
        name = fh.read().strip()
    if not _NAME_RE.match(name):
        raise CheckpointError(f"{pointer}: expected a checkpoint name like 'epoch-0004', "
                              f"found {name!r}")
    return os.path.join(directory, name)


def resolve(path: str) -> str:
    """A checkpoint path: ``path`` itself, or the one its ``latest`` pointer names."""
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}: the path does not exist")
    if os.path.isfile(os.path.join(path, LATEST)):
        target = latest(path)
        assert target is not None
        if not os.path.isdir(target):
            raise CheckpointError(f"{os.path.join(path, LATEST)} names {target}, which does "
                                  "not exist")
        return target
    if not os.path.isfile(os.path.join(path, PREFIX + ".index")):
        raise CheckpointError(f"no checkpoint at {path}: neither a '{LATEST}' pointer nor a "
                              f"'{PREFIX}.index' file")
    return path


def read_metadata(path: str) -> dict[str, Any]:
    """The ``meta.json`` of a checkpoint (``epoch`` and what the trainer stored)."""
    path = resolve(path)
    meta_path = os.path.join(path, META)
    try:
        with open(meta_path) as fh:
            meta = json.load(fh)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{meta_path}: unreadable checkpoint metadata ({exc})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("epoch"), int):
        raise CheckpointError(f"{meta_path}: expected a JSON object with an integer 'epoch'")
    return meta


def load(path: str, model: tf.keras.Model, optimizer) -> int:
    """Restore weights and optimizer state from ``path``; return the epochs completed.

    ``model`` must be built (called once); the optimizer's variables are created here if needed.
    Raises :class:`CheckpointError` naming the path when it is missing, corrupt or does not fit.
    """
    path = resolve(path)
    if not model.built:
        raise CheckpointError(f"cannot load {path}: build the model (call it once) first")
    build_optimizer(model, optimizer)
    epoch_var = tf.Variable(-1, dtype=tf.int64, trainable=False)
    try:
        status = _trackable(model, optimizer, epoch_var).read(os.path.join(path, PREFIX))
        status.assert_existing_objects_matched()
    except Exception as exc:  # reader errors vary: OpError, ValueError, IndexError, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} is corrupt or does not fit this model/"
                              f"optimizer: {type(exc).__name__}: {first}") from exc
    epoch = int(epoch_var.numpy())
    if epoch < 0:
        raise CheckpointError(f"checkpoint {path} holds no epoch counter")
    return epoch
