"""TrainConfig: how one configuration (one trial) is trained, validated before compute starts.

Batch size is per rank: with N Horovod ranks an optimizer step sees N x ``batch_size`` events,
and the learning rate is scaled with N by ``lr_scaling`` (linear: lr x N, sqrt: lr x sqrt(N),
none: unscaled, as the reference study did); the choice and the resulting rate are logged on
rank 0 and recorded in the trial's result (``lr_scaling``, ``base_lr``, ``lr``).
The learning-rate schedules count optimizer steps, so they continue where they stopped when a
trial resumes from a checkpoint (the step counter is part of the optimizer state).

Schedules: ``exponential`` multiplies the rate by ``decay_rate`` every ``decay_steps`` steps
(in whole steps with ``staircase``: on for ``--model.variant=reference`` unless set, as the
reference); ``cosine`` decays over the trial's total training steps, max(``epochs``, the
epochs the trial is asked to reach) x steps per epoch, so the rate is above zero until the
trial's last step whatever batch size or data size a search draws (``decay_steps`` does not
apply to it).

``precision`` selects the Keras mixed-precision policy: ``float32`` (default), ``bfloat16``
(``mixed_bfloat16``: layers compute in bfloat16 and keep float32 weights; CPUs with
AVX512-BF16/AMX and recent GPUs run its matmuls fast; no loss scaling is needed) or ``float16``
(``mixed_float16`` with dynamic loss scaling, for GPUs with float16 tensor cores; slower than
float32 on CPUs). The outputs and the loss are float32 and the LSH adjacency is computed
in float32 in every policy.
``mixed_precision`` is the older spelling of ``precision=float16``. ``jit_compile`` compiles
the training step with XLA.
"""

from __future__ import annotations

import dataclasses

from mlpf_tf.configbase import Section, param

OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("constant", "exponential", "cosine")
LR_SCALINGS = ("linear", "sqrt", "none")
#: --train.precision -> Keras mixed-precision policy
PRECISION_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16",
                      "float16": "mixed_float16"}


@dataclasses.dataclass
class TrainConfig(Section):
    """Optimizer, schedule, epochs, batching, precision and checkpointing of one trial."""

    SECTION = "train"

    epochs: int = param(10, "epochs to train (one epoch = one scheduler time step)", low=1,
                        high=100_000)
    batch_size: int = param(4, "events per batch per rank (reference 5 per GPU)", low=1,
                            high=100_000)
    optimizer: str = param("adam", "optimizer", choices=OPTIMIZERS)
    lr: float = param(1e-3, "learning rate for one rank, before lr_scaling (search 1e-4..3e-2)",
                      high=10.0)
    momentum: float = param(0.0, "sgd: momentum", low=0.0)
    lr_schedule: str = param("constant", "learning-rate schedule over optimizer steps",
                             choices=LR_SCHEDULES)
    decay_steps: int = param(1000, "exponential only: steps per decay by decay_rate (search "
                             "10..2000); cosine spans the trial's total training steps", low=1)
    decay_rate: float = param(0.99, "exponential: factor per decay_steps (search 0.9..1.0)",
                              low=0.0, high=1.0)
    staircase: str = param("auto", "exponential: decay in whole steps of decay_steps (on) or "
                           "continuously (off); auto = on for --model.variant=reference (as "
                           "the reference), off for improved", choices=("auto", "on", "off"))
    cosine_alpha: float = param(0.0, "cosine: learning rate after the trial's total training "
                                "steps, as a fraction of lr", low=0.0, high=1.0)
    lr_scaling: str = param("linear", "scale lr with the number of Horovod ranks N: linear "
                            "(x N), sqrt (x sqrt N) or none (the reference study: none); "
                            "recorded in the trial result", choices=LR_SCALINGS)
    steps_per_epoch: int = param(0, "optimizer steps per epoch (0 = one pass over each rank's "
                                 "shard of the train split)", low=0)
    validation_steps: int = param(0, "validation batches per rank per epoch (0 = the whole "
                                  "validation shard)", low=0)
    jit_compile: bool = param(False, "compile the training step with XLA")
    precision: str = param("float32", "compute precision (Keras mixed precision; weights, "
                           "outputs and loss stay float32): bfloat16 for CPUs with "
                           "AVX512-BF16/AMX and GPUs, float16 with loss scaling for GPUs",
                           choices=tuple(PRECISION_POLICIES))
    mixed_precision: bool = param(False, "same as --train.precision=float16 (mixed_float16 "
                                  "with loss scaling; for GPUs, slower on CPUs)")
    seed: int = param(0, "seed of weight initialisation, dropout and shuffling", low=0,
                      high=2**31 - 1)
    num_threads: int = param(0, "TensorFlow intra-op threads per rank (0 = TF default); set "
                             "once per process, before the first trial", low=0, high=1024)
    checkpoint_every_epochs: int = param(1, "write a checkpoint every N epochs (0 = only after "
                                         "the last epoch); the last epoch is always written",
                                         low=0)
    keep_checkpoints: int = param(2, "checkpoints kept per trial (oldest removed first)", low=1)
    nonfinite_check_every: int = param(
        20, "with several ranks: batches between the ranks' agreement on a NaN/Inf loss (one "
        "small collective each; the last batch of every epoch is always checked). A "
        "non-finite loss stops all ranks at the next check; one rank checks every batch",
        low=1, high=1_000_000)
    verbose: int = param(0, "Keras progress output on rank 0: 0 silent, 1 bar, 2 one line per "
                         "epoch", low=0, high=2)

    def check(self) -> None:
        if not self.lr > 0.0:
            self.fail("lr", "must be > 0")
        if self.lr_schedule == "exponential" and not self.decay_rate > 0.0:
            self.fail("decay_rate", "must be > 0 for --train.lr_schedule=exponential")
        if self.optimizer != "sgd" and self.momentum != 0.0:
            self.fail("momentum", f"applies to --train.optimizer=sgd only, not "
                      f"{self.optimizer!r}; leave it 0")
        if not self.momentum < 1.0:
            self.fail("momentum", "must be < 1")
        if self.mixed_precision and self.precision not in ("float32", "float16"):
            self.fail("mixed_precision", f"means --train.precision=float16 and contradicts "
                      f"--train.precision={self.precision}; set only --train.precision")

    @property
    def compute_precision(self) -> str:
        """float32, bfloat16 or float16 (``mixed_precision`` means float16)."""
        return "float16" if self.mixed_precision else self.precision

    @property
    def policy(self) -> str:
        """The Keras mixed-precision policy name of :attr:`compute_precision`."""
        return PRECISION_POLICIES[self.compute_precision]

    @property
    def loss_scaling(self) -> bool:
        """float16 only: the loss is scaled (LossScaleOptimizer) against underflow."""
        return self.compute_precision == "float16"
