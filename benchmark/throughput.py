"""Throughput of the MLPF model: training and inference events/s, FLOP rate, memory, scaling.

    python -m benchmark.throughput [--models=small,medium --elements=256,1024 --threads=2 ...]

Prints
  * this machine's dense float32 matmul GFLOP/s (``--matmul_size`` square tf.matmul): the
    reference for the model's achieved FLOP rate;
  * for every model size in ``--models`` and event size in ``--elements``: training and
    inference events/s (steady state, median and best of ``--repeats`` timed runs of
    ``--steps`` steps after warm-up), achieved GFLOP/s of the training step (best run) and its
    ratio to the matmul rate, and
    the process's peak RSS so far (``resource.getrusage``; sizes run small to large, so growth is
    attributable to the current configuration);
  * time per element of a training step at ``--scaling_elements`` (default 256, 1024, 4096)
    elements per event and fixed ``--scaling_bin_size``, at a fixed number of elements per batch
    (so only the event size changes), as wall time and as process CPU time, with the max/min
    ratios (the goal: <= 1.5, cost ~ N; on a loaded machine trust the CPU-time ratio);
  * one epoch of ``--epoch_events`` (default 1000) synthetic events of ``--epoch_elements``
    (default 256) elements with the default small model via ``model.fit``: wall and CPU time
    including the first-step tracing, and of a second, steady-state epoch (goal: < 60 s);
  * optionally (``--weak_scaling``) the Horovod weak-scaling measurement of
    ``benchmark/weak_scaling.py`` (see :func:`weak_scaling_hook`).

``--scenario=reference`` measures the settings of the reference study's Delphes training
instead (6400 elements per event, batch 5, bin size 640, 2 threads, float32; the preset
``reference`` = this project's network at the Delphes sizes, ``--models=delphes`` the
reference design ``DELPHES_REFERENCE``); ``--scenario=reference_small`` the same at 1024
elements and bin size 640 -> 128. Per model it prints training and inference events/s, the
peak RSS after inference and after training (inference runs first, so the second figure is
the training peak), and the seconds of the first training step (tracing included).
``--scenario=precision`` trains the same initial weights for ``--steps`` (200) steps on the same
batches in float32 and in ``--precision`` (bfloat16 unless float16 is given), alternated
``--repeats`` times, and prints the seconds per step, the speed-up and the relative
difference of the held-out loss after those steps (goal <= 1 %).
``--set=field=value,...`` overrides ModelConfig fields (e.g. ``recompute=true``) and
``--precision`` selects the Keras mixed-precision policy. Flags given explicitly win over the
scenario's settings. One model per process gives attributable peak RSS figures.

Events are random but schema-shaped (towers and tracks, energies spanning decades, all
elements real): the cost of the network does not depend on the values.

FLOP count (analytic, :func:`forward_flops`): 2 * in * out per element for every Dense layer,
2 * bin_size * width per element for every in-bin matmul (Gram matrix of the distance
coordinates, message aggregation), 2 * distance_dim * max_num_bins / 2 for the LSH projection;
elementwise work (activations, layer norm, exp, softmax, sorting) is not counted. A training
step is counted as 3x the forward pass (backward ~ 2x forward), the usual convention; the
achieved GFLOP/s is therefore a slight underestimate of the work done.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import resource
import statistics
import sys
import time

import numpy as np
from absl import app, flags

from benchmark import slowdown
from mlpf_tf.model.config import DELPHES_REFERENCE

FLAGS = flags.FLAGS

#: model size presets (ModelConfig field overrides); "small" is the ModelConfig default
PRESETS = {
    "small": {},
    "medium": dict(hidden_dim=64, distance_dim=64, ffn_dist_hidden_dim=64, output_dim=64,
                   head_hidden_dim=64, bin_size=64, num_graph_layers_common=3,
                   num_graph_layers_energy=3, num_node_messages=2),
    # the improved layout at the reference Delphes sizes (the analytic FLOP count below
    # describes the improved layout; --model.variant=reference differs in its heads)
    "reference": {**DELPHES_REFERENCE, "variant": "improved", "hidden_dim": 256,
                  "layernorm": True},
    # the reference design itself (--model.variant=reference) at the Delphes settings
    "delphes": dict(DELPHES_REFERENCE),
}

#: named measurement settings (flag -> value); --models, --elements etc. given explicitly win
SCENARIOS = {
    "reference": dict(models=["reference"], elements=["6400"], batch_size=5, bin_size=640,
                      threads=2, steps=2, repeats=2),
    "reference_small": dict(models=["reference"], elements=["1024"], batch_size=5,
                            bin_size=128, threads=2, steps=5, repeats=3),
    # float32 against bfloat16: seconds per step and the loss after `steps` training steps
    "precision": dict(models=["reference"], elements=["256"], batch_size=5, bin_size=64,
                      threads=1, steps=200, repeats=1),
}


def define_flags_once() -> None:
    """Define this program's flags (at run time, so importing the module defines none)."""
    if "scaling_bin_size" in FLAGS:
        return
    flags.DEFINE_list("models", ["small", "medium"], f"model presets: {', '.join(PRESETS)}")
    flags.DEFINE_list("elements", ["256", "1024"], "elements per event of the throughput runs")
    flags.DEFINE_integer("batch_size", 4, "events per batch of the throughput runs", lower_bound=1)
    flags.DEFINE_integer("steps", 10, "timed steps per repeat", lower_bound=1)
    flags.DEFINE_integer("repeats", 3, "timed repeats (median reported)", lower_bound=1)
    flags.DEFINE_integer("threads", 2, "TensorFlow intra-op threads (inter-op: 1)", lower_bound=1)
    flags.DEFINE_integer("matmul_size", 2048, "size of the square matmul timed for the "
                         "machine's dense GFLOP/s", lower_bound=64)
    flags.DEFINE_list("scaling_elements", ["256", "1024", "4096"],
                      "elements per event of the per-element cost scaling check")
    flags.DEFINE_integer("scaling_bin_size", 32, "bin size of the scaling check", lower_bound=2)
    flags.DEFINE_integer("scaling_batch_elements", 4096,
                         "elements per batch of the scaling check (events = this / size)",
                         lower_bound=1)
    flags.DEFINE_integer("epoch_events", 1000, "events of the one-epoch run (0 = skip)",
                         lower_bound=0)
    flags.DEFINE_integer("epoch_elements", 256, "elements per event of the one-epoch run",
                         lower_bound=1)
    flags.DEFINE_integer("epoch_batch_size", 8, "events per batch of the one-epoch run",
                         lower_bound=1)
    flags.DEFINE_boolean("weak_scaling", False, "also run the Horovod weak-scaling "
                         "measurement of benchmark/weak_scaling.py")
    flags.DEFINE_integer("seed", 1, "seed of the synthetic events and the model", lower_bound=0)
    flags.DEFINE_enum("scenario", None, list(SCENARIOS), "measure these named settings only "
                      "(training/inference events/s, peak RSS, first-step seconds)")
    flags.DEFINE_list("set", [], "ModelConfig overrides field=value, e.g. recompute=true")
    flags.DEFINE_boolean("jit_compile", False, "scenario runs: compile the training step "
                         "with XLA (Keras compile(jit_compile=True))")
    flags.DEFINE_enum("precision", "float32", ["float32", "bfloat16", "float16"],
                      "compute precision (Keras mixed-precision policy) of the scenario runs")


# --- inputs ------------------------------------------------------------------------------------

def synthetic_batch(n_events: int, n_elements: int, seed: int = 0):
    """(X, y, w) numpy arrays of schema-shaped random events, every element real."""
    from mlpf_tf.data import schema

    rng = np.random.default_rng(seed)
    shape = (n_events, n_elements)
    X = np.zeros(shape + (schema.NUM_FEATURES,), np.float32)
    X[..., schema.F_TYPE] = rng.integers(1, 3, shape)
    X[..., schema.F_PT] = rng.lognormal(1.0, 1.2, shape)
    X[..., schema.F_ETA] = rng.uniform(-4, 4, shape)
    phi = rng.uniform(-np.pi, np.pi, shape)
    X[..., schema.F_SIN_PHI], X[..., schema.F_COS_PHI] = np.sin(phi), np.cos(phi)
    X[..., schema.F_E] = X[..., schema.F_PT] * np.cosh(X[..., schema.F_ETA])
    X[..., 6:9] = rng.normal(size=shape + (3,))
    y = np.zeros(shape + (schema.NUM_TARGETS,), np.float32)
    y[..., schema.T_CLS] = rng.integers(0, schema.NUM_CLASSES, shape)
    y[..., schema.T_PT:] = X[..., [schema.F_PT, schema.F_ETA, schema.F_SIN_PHI,
                                   schema.F_COS_PHI, schema.F_E]]
    y[y[..., schema.T_CLS] == 0] = 0.0
    return X, y, np.ones(shape, np.float32)


def parse_overrides(items: list[str]) -> dict:
    """``["recompute=true", "bin_size=64"]`` -> {"recompute": True, "bin_size": 64}."""
    from mlpf_tf.model.config import ModelConfig

    defaults = ModelConfig()
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not hasattr(defaults, key):
            raise app.UsageError(f"--set={item}: expected field=value with a ModelConfig field")
        kind = type(getattr(defaults, key))
        try:
            if kind is bool:
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                out[key] = value.lower() in ("true", "1")
            else:
                out[key] = kind(value)
        except ValueError:
            raise app.UsageError(f"--set={item}: expected a {kind.__name__}") from None
    return out


def model_config(preset: str, **overrides):
    """ModelConfig of a preset with overrides, validated."""
    from mlpf_tf.model.config import ModelConfig

    if preset not in PRESETS:
        raise app.UsageError(f"--models: unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    cfg = ModelConfig(**{**PRESETS[preset], **overrides})
    cfg.validate()
    return cfg


# --- FLOPs -------------------------------------------------------------------------------------

def _ffn_flops(d_in: int, hidden: int, layers: int, d_out: int) -> int:
    dims = [d_in] + [hidden] * layers + [d_out]
    return sum(2 * a * b for a, b in zip(dims[:-1], dims[1:]))


def forward_flops(cfg, n_elements: int) -> int:
    """Analytic forward-pass FLOPs of one event of ``n_elements`` (see the module docstring)."""
    from mlpf_tf.data import schema

    bs = cfg.bin_size
    n = -(-n_elements // bs) * bs  # padded to a multiple of the bin size
    enc_in = schema.NUM_ELEMENT_TYPES + schema.NUM_FEATURES - 1
    per_element = 2 * enc_in * cfg.hidden_dim

    def graph_layer(d_in: int) -> int:
        f = _ffn_flops(d_in, cfg.ffn_dist_hidden_dim, cfg.ffn_dist_num_layers, cfg.distance_dim)
        f += 2 * cfg.distance_dim * (cfg.max_num_bins // 2)  # LSH projection
        f += 2 * bs * cfg.distance_dim  # in-bin Gram matrix
        d = d_in
        for _ in range(cfg.num_node_messages):
            f += 3 * 2 * d * cfg.output_dim + 2 * bs * cfg.output_dim  # msg/self/gate + A @ m
            d = cfg.output_dim
        return f

    for depth in (cfg.num_graph_layers_common, cfg.num_graph_layers_energy):
        d = cfg.hidden_dim
        for _ in range(depth):
            per_element += graph_layer(d)
            d = cfg.output_dim
    cls_in = cfg.hidden_dim + cfg.num_graph_layers_common * cfg.output_dim
    reg_in = cfg.hidden_dim + cfg.num_graph_layers_energy * cfg.output_dim + cfg.num_classes
    per_element += _ffn_flops(cls_in, cfg.head_hidden_dim, cfg.head_num_layers, cfg.num_classes)
    for out in (1, 1, 2, 1, 2):  # charge, eta, phi, energy, pt
        per_element += _ffn_flops(reg_in, cfg.head_hidden_dim, cfg.head_num_layers, out)
    return per_element * n


def train_step_flops(cfg, n_elements: int, batch_size: int) -> int:
    """Training-step FLOPs of a batch: 3x the forward pass."""
    return 3 * forward_flops(cfg, n_elements) * batch_size


def matmul_gflops(size: int, repeats: int = 5) -> float:
    """This machine's dense float32 matmul rate (best of ``repeats``), GFLOP/s."""
    import tensorflow as tf

    a = tf.random.normal([size, size], seed=1)
    b = tf.random.normal([size, size], seed=2)
    mm = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    mm(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        mm(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


# --- timing ------------------------------------------------------------------------------------

def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Timing(dict):
    """Seconds per call: ``wall`` (median of repeats), ``best`` (fastest repeat) and ``cpu``
    (median process CPU seconds, all threads). On a shared machine the wall figures include
    waiting for the CPU; the CPU figure does not, so ratios of CPU times stay meaningful."""

    @property
    def wall(self) -> float:
        return self["wall"]


def _timed_runs(fn, steps: int, repeats: int) -> Timing:
    """Seconds per call of ``fn`` over ``repeats`` runs of ``steps`` calls, after warm-up."""
    fn()  # warm-up (tracing, allocation)
    fn()
    walls, cpus = [], []
    slow = slowdown.fraction()  # the nightly suite's test switch (0: none)
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step_cpu = time.process_time()
            fn()
            slowdown.pad(time.process_time() - step_cpu, slow)
        walls.append((time.perf_counter() - start) / steps)
        cpus.append((time.process_time() - cpu) / steps)
    return Timing(wall=statistics.median(walls), best=min(walls), cpu=statistics.median(cpus))


def build_compiled(cfg, seed: int):
    import tensorflow as tf

    from mlpf_tf.model.network import build_model

    tf.keras.utils.set_random_seed(seed)
    model = build_model(cfg)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-4))
    return model


def train_step_seconds(model, batch, steps: int, repeats: int) -> Timing:
    """Seconds of one training step (Keras train function) on ``batch``."""
    import tensorflow as tf

    train_fn = model.make_train_function()
    it = iter(tf.data.Dataset.from_tensors(batch).repeat())

    def step():
        logs = train_fn(it)
        float(logs["loss"])  # wait for the step

    return _timed_runs(step, steps, repeats)


def inference_seconds(model, X, steps: int, repeats: int) -> Timing:
    """Seconds of one inference pass on ``X``."""
    import tensorflow as tf

    forward = tf.function(lambda x: model(x, training=False)["cls"])
    X = tf.constant(X)
    return _timed_runs(lambda: forward(X).numpy(), steps, repeats)


def measure_model(preset: str, n_elements: int, batch_size: int, steps: int, repeats: int,
                  seed: int = 1, **overrides) -> dict:
    """Training/inference events/s, GFLOP/s and peak RSS of one model size and event size."""
    cfg = model_config(preset, **overrides)
    model = build_compiled(cfg, seed)
    batch = synthetic_batch(batch_size, n_elements, seed)
    t_train = train_step_seconds(model, batch, steps, repeats)
    t_infer = inference_seconds(model, batch[0], steps, repeats)
    flops = train_step_flops(cfg, n_elements, batch_size)
    return {"preset": preset, "elements": n_elements, "batch_size": batch_size,
            "params": model.count_params(),
            "train_events_per_s": batch_size / t_train["wall"],
            "train_events_per_s_best": batch_size / t_train["best"],
            "infer_events_per_s": batch_size / t_infer["wall"],
            "infer_events_per_s_best": batch_size / t_infer["best"],
            "train_step_s": t_train["wall"], "train_gflops": flops / t_train["best"] / 1e9,
            "train_gflop_per_step": flops / 1e9, "peak_rss_mb": peak_rss_mb()}


def per_element_scaling(sizes: list[int], bin_size: int, batch_elements: int, steps: int,
                        repeats: int, seed: int = 1) -> dict[int, Timing]:
    """Training-step seconds per element at each event size (same elements per batch)."""
    out = {}
    for size in sizes:
        events = max(1, batch_elements // size)
        model = build_compiled(model_config("small", bin_size=bin_size), seed)
        t = train_step_seconds(model, synthetic_batch(events, size, seed), steps, repeats)
        out[size] = Timing({k: v / (events * size) for k, v in t.items()})
    return out


def epoch_seconds(n_events: int, n_elements: int, batch_size: int, seed: int = 1) -> dict:
    """One ``model.fit`` epoch of the default small model: wall time with and without tracing."""
    import tensorflow as tf

    model = build_compiled(model_config("small"), seed)
    X, y, w = synthetic_batch(n_events, n_elements, seed)
    ds = tf.data.Dataset.from_tensor_slices((X, y, w)).batch(batch_size).prefetch(2)
    times = []
    for _ in range(2):  # the first epoch includes tracing the train step
        start, cpu = time.perf_counter(), time.process_time()
        model.fit(ds, epochs=1, verbose=0)
        times.append((time.perf_counter() - start, time.process_time() - cpu))
    return {"first_epoch_s": times[0][0], "first_epoch_cpu_s": times[0][1],
            "steady_epoch_s": times[1][0], "steady_epoch_cpu_s": times[1][1],
            "events": n_events, "elements": n_elements, "batch_size": batch_size}


def nightly_training_throughput() -> float:
    """Training events per CPU-second for the nightly suite: small model, 4 events of 256
    elements. CPU time, not wall time: it does not move when another job shares the machine."""
    _set_threads(2)
    cfg = model_config("small")
    model = build_compiled(cfg, 1)
    batch = synthetic_batch(4, 256, 1)
    return 4 / train_step_seconds(model, batch, steps=10, repeats=3)["cpu"]


# --- weak scaling (Horovod) --------------------------------------------------------------------

def weak_scaling_hook(**kwargs) -> dict | None:
    """HOOK for the Horovod weak-scaling measurement.

    ``benchmark/weak_scaling.py`` exposes ``measure(...) -> dict``; it is called with those of
    ``kwargs`` (model_cfg, threads, repeats, batch_size, elements) that its signature accepts.
    Returns None (and says so) when the module is not importable.
    """
    try:
        from benchmark import weak_scaling
    except ImportError as exc:
        print(f"weak scaling: benchmark.weak_scaling not available ({exc})")
        return None
    params = inspect.signature(weak_scaling.measure).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = {k: v for k, v in kwargs.items() if takes_any or k in params}
    return weak_scaling.measure(**accepted)


# --- named scenarios ---------------------------------------------------------------------------

def first_step_seconds(train_fn, it) -> float:
    """Seconds of the first call of the training function (tracing and graph optimisation)."""
    start = time.perf_counter()
    float(train_fn(it)["loss"])
    return time.perf_counter() - start


@contextlib.contextmanager
def precision_policy(precision: str):
    """The Keras mixed-precision policy of ``--train.precision`` while the block runs."""
    import tensorflow as tf

    from mlpf_tf.train_config import PRECISION_POLICIES

    tf.keras.mixed_precision.set_global_policy(PRECISION_POLICIES[precision])
    try:
        yield
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")


def build_in_precision(cfg, seed: int, precision: str):
    """:func:`build_compiled` under the current policy; float16 gets loss scaling and
    ``--jit_compile`` XLA."""
    import tensorflow as tf

    model = build_compiled(cfg, seed)
    optimizer = tf.keras.optimizers.Adam(1e-4)
    if precision == "float16":
        optimizer = tf.keras.mixed_precision.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, jit_compile=FLAGS.jit_compile)
    return model


def measure_scenario(preset: str, n_elements: int, batch_size: int, bin_size: int, steps: int,
                     repeats: int, seed: int = 1, precision: str = "float32",
                     **overrides) -> dict:
    """Inference then training of one model: events/s, peak RSS after each, first step s."""
    import tensorflow as tf

    with precision_policy(precision):
        model = build_in_precision(model_config(preset, bin_size=bin_size, **overrides), seed,
                                   precision)
        X, y, w = synthetic_batch(batch_size, n_elements, seed)
        t_infer = inference_seconds(model, X, steps, repeats)
        infer_rss = peak_rss_mb()
        train_fn = model.make_train_function()
        it = iter(tf.data.Dataset.from_tensors((X, y, w)).repeat())
        first = first_step_seconds(train_fn, it)

        def step():
            float(train_fn(it)["loss"])

        t_train = _timed_runs(step, steps, repeats)
    return {"preset": preset, "elements": n_elements, "batch_size": batch_size,
            "bin_size": bin_size, "precision": precision, "params": model.count_params(),
            "train_events_per_s": batch_size / t_train["wall"],
            "train_events_per_s_best": batch_size / t_train["best"],
            "infer_events_per_s": batch_size / t_infer["wall"],
            "infer_events_per_s_best": batch_size / t_infer["best"],
            "first_step_s": first, "infer_peak_rss_mb": infer_rss,
            "train_peak_rss_mb": peak_rss_mb()}


def loss_after_steps(preset: str, n_elements: int, batch_size: int, bin_size: int, steps: int,
                     precision: str, seed: int = 1, **overrides) -> dict:
    """Train ``steps`` Adam steps from the same initial weights on the same 8 batches (cycled)
    under ``precision``; the loss of a held-out batch afterwards and the seconds per step."""
    import tensorflow as tf

    with precision_policy(precision):
        model = build_in_precision(model_config(preset, bin_size=bin_size, **overrides), seed,
                                   precision)
        batches = [synthetic_batch(batch_size, n_elements, seed + i) for i in range(8)]
        ds = tf.data.Dataset.from_tensor_slices(tuple(np.stack(a) for a in zip(*batches)))
        it = iter(ds.repeat())
        train_fn = model.make_train_function()
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            float(train_fn(it)["loss"])
            times.append(time.perf_counter() - start)
        X, y, w = synthetic_batch(batch_size, n_elements, seed + 100)
        loss = float(model.mlpf_loss(y, model(X, training=False), w)["loss"])
    return {"precision": precision, "loss": loss, "first_step_s": times[0],
            "step_s": statistics.median(times[1:]) if steps > 1 else times[0]}


def run_precision_scenario(models, elements, batch_size, bin_size, steps, repeats,
                           overrides) -> None:
    low = FLAGS.precision if FLAGS.precision != "float32" else "bfloat16"
    for preset in models:
        for n in elements:
            runs = {"float32": [], low: []}
            for _ in range(repeats):  # alternated
                for precision in runs:
                    r = loss_after_steps(preset, n, batch_size, bin_size, steps, precision,
                                         FLAGS.seed, **overrides)
                    runs[precision].append(r)
                    print(f"{preset} N={n} B={batch_size} bin={bin_size} {precision}: "
                          f"{steps} steps, median {r['step_s']:.3f} s/step (first "
                          f"{r['first_step_s']:.1f} s), held-out loss after {steps} steps "
                          f"{r['loss']:.6g}", flush=True)
            base = statistics.median(r["step_s"] for r in runs["float32"])
            fast = statistics.median(r["step_s"] for r in runs[low])
            diff = abs(runs[low][0]["loss"] - runs["float32"][0]["loss"])
            rel = diff / abs(runs["float32"][0]["loss"])
            print(f"{preset} N={n}: {low} speed-up over float32 {base / fast:.2f}x; loss "
                  f"relative difference {100 * rel:.2f}% (goal <= 1%: "
                  f"{'met' if rel <= 0.01 else 'NOT met'})", flush=True)


def _scenario_value(name: str, scenario: dict):
    return FLAGS[name].value if FLAGS[name].present or name not in scenario else scenario[name]


def run_scenario(name: str) -> None:
    scenario = SCENARIOS[name]
    models = _scenario_value("models", scenario)
    elements = _ints("elements", _scenario_value("elements", scenario))
    batch_size, threads, steps, repeats = (_scenario_value(k, scenario) for k in
                                           ("batch_size", "threads", "steps", "repeats"))
    overrides = parse_overrides(FLAGS.set)
    bin_size = overrides.pop("bin_size", scenario["bin_size"])
    for preset in models:
        model_config(preset, bin_size=bin_size, **overrides)  # fail before measuring
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _set_threads(threads)
    print(f"== scenario {name}: threads {threads} (inter-op 1), batch {batch_size}, bin size "
          f"{bin_size}, {FLAGS.precision}, jit_compile {FLAGS.jit_compile}, overrides "
          f"{overrides or 'none'}; "
          f"{repeats} x {steps} timed steps (median, best) ==", flush=True)
    if name == "precision":
        run_precision_scenario(models, elements, batch_size, bin_size, steps, repeats,
                               overrides)
        return
    for preset in models:
        for n in elements:
            r = measure_scenario(preset, n, batch_size, bin_size, steps, repeats, FLAGS.seed,
                                 FLAGS.precision, **overrides)
            print(f"{preset} N={n} B={batch_size} bin={bin_size}: train "
                  f"{r['train_events_per_s']:.3f} ev/s (best {r['train_events_per_s_best']:.3f})"
                  f"  infer {r['infer_events_per_s']:.2f} ev/s (best "
                  f"{r['infer_events_per_s_best']:.2f})  peak RSS infer "
                  f"{r['infer_peak_rss_mb']:.0f} MB, train {r['train_peak_rss_mb']:.0f} MB  "
                  f"first step {r['first_step_s']:.1f} s  params {r['params']}", flush=True)


# --- main --------------------------------------------------------------------------------------

def _set_threads(threads: int) -> None:
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised (e.g. called twice in one process)
        pass


def _ints(name: str, values: list[str]) -> list[int]:
    try:
        out = [int(v) for v in values]
    except ValueError:
        raise app.UsageError(f"--{name}={','.join(values)}: expected integers") from None
    if not out or any(v < 1 for v in out):
        raise app.UsageError(f"--{name}={','.join(values)}: expected integers >= 1")
    return out


def one_line_usage_errors(program: str, body):
    """absl main function running ``body(argv)``; a UsageError becomes one line on stderr and
    exit status 2 (instead of absl's usage text)."""

    def main(argv) -> None:
        try:
            body(argv)
        except app.UsageError as exc:
            print(f"{program}: {exc}", file=sys.stderr)
            sys.exit(2)

    return main


def _main(argv) -> None:
    del argv
    if FLAGS.scenario:
        run_scenario(FLAGS.scenario)
        return
    elements = _ints("elements", FLAGS.elements)
    scaling = _ints("scaling_elements", FLAGS.scaling_elements)
    for preset in FLAGS.models:
        model_config(preset)  # fail on a bad preset before measuring anything
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _set_threads(FLAGS.threads)

    print(f"threads: intra-op {FLAGS.threads}, inter-op 1; repeats {FLAGS.repeats} x "
          f"{FLAGS.steps} steps (median)")
    peak = matmul_gflops(FLAGS.matmul_size)
    print(f"dense matmul {FLAGS.matmul_size}^2 float32: {peak:8.1f} GFLOP/s", flush=True)

    print("== training / inference throughput ==")
    for preset in FLAGS.models:
        for n in elements:
            r = measure_model(preset, n, FLAGS.batch_size, FLAGS.steps, FLAGS.repeats,
                              FLAGS.seed)
            print(f"{preset:>9} N={n:>5} B={FLAGS.batch_size}: train "
                  f"{r['train_events_per_s']:7.1f} ev/s (best {r['train_events_per_s_best']:7.1f})"
                  f"  infer {r['infer_events_per_s']:7.1f} ev/s (best "
                  f"{r['infer_events_per_s_best']:7.1f})  {r['train_gflops']:6.2f} GFLOP/s "
                  f"({100 * r['train_gflops'] / peak:4.1f}% of matmul; "
                  f"{r['train_gflop_per_step']:.2f} GFLOP/step)  params {r['params']}  "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)

    print(f"== per-element cost vs event size (small model, bin_size {FLAGS.scaling_bin_size},"
          f" {FLAGS.scaling_batch_elements} elements per batch) ==")
    per = per_element_scaling(scaling, FLAGS.scaling_bin_size, FLAGS.scaling_batch_elements,
                              FLAGS.steps, FLAGS.repeats, FLAGS.seed)
    for n, t in per.items():
        print(f"N={n:>5}: {1e6 * t['wall']:8.2f} us wall (best {1e6 * t['best']:8.2f}), "
              f"{1e6 * t['cpu']:8.2f} us CPU per element per training step", flush=True)
    for label, key in (("wall (median)", "wall"), ("wall (best)", "best"), ("CPU", "cpu")):
        values = [t[key] for t in per.values()]
        ratio = max(values) / min(values)
        print(f"max/min per-element {label} time ratio: {ratio:.2f} (goal <= 1.5: "
              f"{'met' if ratio <= 1.5 else 'NOT met'})")

    if FLAGS.epoch_events:
        r = epoch_seconds(FLAGS.epoch_events, FLAGS.epoch_elements, FLAGS.epoch_batch_size,
                          FLAGS.seed)
        print(f"== one epoch, small model: {r['events']} events x {r['elements']} elements, "
              f"batch {r['batch_size']} ==")
        print(f"first epoch (incl. tracing) {r['first_epoch_s']:.1f} s wall, "
              f"{r['first_epoch_cpu_s']:.1f} s CPU; steady epoch {r['steady_epoch_s']:.1f} s wall,"
              f" {r['steady_epoch_cpu_s']:.1f} s CPU (goal < 60 s wall: "
              f"{'met' if r['first_epoch_s'] < 60 else 'NOT met'})", flush=True)

    if FLAGS.weak_scaling:
        print("== Horovod weak scaling ==")
        # 2 ranks (weak_scaling's default) share --threads cores: threads per rank = half.
        result = weak_scaling_hook(model_cfg=model_config("small"),
                                   threads=max(1, FLAGS.threads // 2),
                                   repeats=FLAGS.repeats, batch_size=FLAGS.batch_size,
                                   elements=elements[0])
        if result is not None:
            for k, v in result.items():
                print(f"{k}: {v}")


main = one_line_usage_errors("benchmark.throughput", _main)


def run() -> None:
    """Console entry point."""
    define_flags_once()
    app.run(main)


if __name__ == "__main__":
    run()
