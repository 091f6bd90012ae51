"""Samplers that propose new configurations for the ASHA oracle: "random" or "bayesian".

The scheduler (:mod:`tuners.rungs`) decides how long a configuration trains; a sampler decides
which configuration starts at the bottom rung. Both samplers are deterministic given the
oracle's seed, and their state survives ``Oracle.save`` / ``Oracle.reload``.

- ``RandomSampler``: keras-tuner's own seeded sampler (``Oracle._random_values``: one draw per
  hyperparameter from the oracle's ``_seed_state``, re-drawn on a duplicate). Its state is the
  oracle's ``seed_state``, which the base oracle already saves.
- ``BayesianSampler`` (ASHA+BO, as BOHB-style samplers do): after ``num_initial_points`` random
  warm-up configurations, fits a Gaussian process on the results of the highest rung holding at
  least ``max(num_initial_points, dims + 1)`` results and proposes the minimiser of the upper
  confidence bound ``mu - beta * sigma`` of the (sign-folded) loss.

Reused from keras-tuner (``keras_tuner.src.tuners.bayesian.BayesianOptimizationOracle``, held as
a helper object sharing the oracle's search space): the GP regressor it builds
(``_make_gpr``: scikit-learn ``GaussianProcessRegressor``, Matern nu=2.5 kernel, normalised
targets, ``alpha`` jitter, seeded restarts), the unit-cube embedding of hyperparameters
(``hp.value_to_prob`` for each non-fixed hyperparameter, default for inactive ones, as its
``_vectorize_trials`` does), the inverse map ``_vector_to_values`` (``hp.prob_to_value``), the
non-fixed space and the [0, 1] bounds, and the UCB acquisition with its ``beta`` and the
L-BFGS-B local optimiser (``scipy.optimize.minimize``). Our own: which rung to fit on, the cap
on fitted points (best half + most recent), re-tuning the kernel only when the fitted rung has
grown by 25% (in between, the GP is conditioned on new results with the tuned kernel; the tuned
kernel is saved with the state), "hallucinated" pending configurations (running new
configurations get the pessimistic ``mu + sigma`` from the fitted model, so parallel workers
are not all sent to the same point), random candidate screening before a short local
optimisation, and the duplicate guard.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from tuners.rungs import AshaLadder

SAMPLERS = ("random", "bayesian")
LOCAL_MAXITER = 25  # L-BFGS-B iterations per refined point (numerical gradients: d+1 calls)
RETUNE_GROWTH = 1.25  # re-tune the GP kernel when the fitted rung has grown by 25%


@dataclasses.dataclass
class SamplingContext:
    """What a sampler may look at when the oracle asks for a new configuration."""

    space: Any  # keras_tuner.HyperParameters: the search space
    ladder: AshaLadder
    hyperparameters_of: Callable[[str], Any]  # result key (trial id) -> its HyperParameters
    pending: list[Any]  # HyperParameters of new configurations still running
    random_values: Callable[[], dict | None]  # keras-tuner's seeded random draw (None: exhausted)
    is_duplicate: Callable[[dict], bool]  # values already tried


class RandomSampler:
    """Uniform random configurations from keras-tuner's seeded sampler."""

    name = "random"

    def propose(self, context: SamplingContext) -> dict | None:
        return context.random_values()

    def get_state(self) -> dict[str, Any]:
        return {"name": self.name}

    def set_state(self, state: dict[str, Any]) -> None:
        _check_name(self.name, state)


class BayesianSampler:
    """GP + UCB proposals fitted on the highest rung with enough results.

    Args:
        num_initial_points: random warm-up configurations before the model is used (paper: 10).
        alpha: GP observation noise added to the kernel diagonal (keras-tuner default 1e-4).
        beta: UCB exploration weight (keras-tuner default 2.6).
        max_fit_points: cap on results fitted (best half + most recent rest), bounding the cost
            of a proposal at about O(max_fit_points**3) whatever the number of trials.
        gp_restarts: restarts of the kernel-hyperparameter optimiser (keras-tuner uses 20).
        num_candidates: random points screened by the acquisition before local optimisation.
        num_local: best screened points refined by L-BFGS-B.
        seed: seeds the GP and the candidate draws (a per-proposal stream: seed + proposal no.).
    """

    name = "bayesian"

    def __init__(self, num_initial_points: int = 10, alpha: float = 1e-4, beta: float = 2.6,
                 max_fit_points: int = 256, gp_restarts: int = 5, num_candidates: int = 256,
                 num_local: int = 1, seed: int = 0) -> None:
        for arg, value, low in (("num_initial_points", num_initial_points, 1),
                                ("max_fit_points", max_fit_points, 2),
                                ("gp_restarts", gp_restarts, 0),
                                ("num_candidates", num_candidates, 1),
                                ("num_local", num_local, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{arg} must be an integer >= {low}, got {value!r}")
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha!r}")
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta!r}")
        self.num_initial_points = num_initial_points
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.max_fit_points = max_fit_points
        self.gp_restarts = gp_restarts
        self.num_candidates = num_candidates
        self.num_local = num_local
        self.seed = int(seed)
        self._proposals = 0  # configurations proposed so far (warm-up counter, rng stream)
        self._helper = None  # keras-tuner BayesianOptimizationOracle lent for its machinery
        self._fitted = None  # (fit key, fitted GaussianProcessRegressor, x, y)
        self._tuned: dict[str, Any] | None = None  # last kernel tuning: rung, n, names, theta
        self.last_fit_rung: int | None = None  # rung the last model was fitted on (None: random)

    # -- keras-tuner machinery -------------------------------------------------------------
    def _bo(self, space):
        if self._helper is None:
            from keras_tuner.src.tuners.bayesian import BayesianOptimizationOracle

            self._helper = BayesianOptimizationOracle(
                hyperparameters=space, alpha=self.alpha, beta=self.beta,
                seed=self.seed or 1, num_initial_points=self.num_initial_points)
        self._helper.hyperparameters = space
        self._helper.seed = self.seed or 1
        return self._helper

    def _vector(self, hps, nonfixed) -> list[float]:
        vector = []
        for hp in nonfixed:
            if hps.is_active(hp) and hp.name in hps.values:
                value = hps.values[hp.name]
            else:
                value = hp.default
            vector.append(hp.value_to_prob(value))
        return vector

    def min_points(self, dims: int) -> int:
        """Results a rung needs before the model is fitted on it."""
        return max(self.num_initial_points, dims + 1)

    def fit_rung(self, ladder: AshaLadder, dims: int) -> int | None:
        """Highest rung with at least :meth:`min_points` results, or None."""
        need = self.min_points(dims)
        for k in range(ladder.top_rung, -1, -1):
            if ladder.rung_size(k) >= need:
                return k
        return None

    # -- proposals -------------------------------------------------------------------------
    def propose(self, context: SamplingContext) -> dict | None:
        proposal_no = self._proposals
        self._proposals += 1
        self.last_fit_rung = None
        if proposal_no < self.num_initial_points:
            return context.random_values()
        bo = self._bo(context.space)
        nonfixed = bo._nonfixed_space()
        if not nonfixed:
            return context.random_values()
        rung = self.fit_rung(context.ladder, len(nonfixed))
        if rung is None:
            return context.random_values()
        self.last_fit_rung = rung
        from threadpoolctl import threadpool_limits

        rng = np.random.RandomState((self.seed * 1_000_003 + proposal_no) % (2**32))
        # Matrices of a few hundred rows: one BLAS thread is faster than several (and the
        # chief shares its node with other work).
        with threadpool_limits(limits=1, user_api="blas"):
            gpr = self._model(context, bo, nonfixed, rung)
            for vector in self._ranked_points(gpr, bo, rng):
                values = bo._vector_to_values(vector)
                if not context.is_duplicate(values):
                    return values
        return context.random_values()

    def _model(self, context, bo, nonfixed, rung):
        """GP fitted on ``rung`` (cached while its results are unchanged) + pending points.

        The kernel's hyperparameters are tuned (keras-tuner's optimiser with restarts) when the
        rung or the dimensions change or the rung has grown by ``RETUNE_GROWTH`` since the last
        tuning; in between the GP is conditioned on the new results with the tuned kernel kept,
        which costs one Cholesky factorisation. The tuned kernel is part of the saved state,
        so a reloaded oracle makes the same proposals.
        """
        n = context.ladder.rung_size(rung)
        names = [hp.name for hp in nonfixed]
        key = (rung, n, tuple(names))
        if self._fitted is None or self._fitted[0] != key:
            obs = context.ladder.observations(rung, self.max_fit_points)
            x = np.array([self._vector(context.hyperparameters_of(k), nonfixed)
                          for k, _, _ in obs])
            y = np.array([loss for _, loss, _ in obs], dtype=float)
            x = np.nan_to_num(x, posinf=0, neginf=0)
            y = np.nan_to_num(y, posinf=np.nanmax(y[np.isfinite(y)], initial=0.0), neginf=0)
            gpr = bo._make_gpr()
            tuned = self._tuned
            retune = (tuned is None or tuned["rung"] != rung or tuned["names"] != names
                      or n >= tuned["n"] * RETUNE_GROWTH)
            if retune:
                gpr.set_params(n_restarts_optimizer=self.gp_restarts)
            else:
                gpr.set_params(kernel=gpr.kernel.clone_with_theta(np.array(tuned["theta"])),
                               optimizer=None)
            with warnings.catch_warnings():  # kernel bounds reached: expected on flat data
                warnings.simplefilter("ignore", category=UserWarning)
                gpr.fit(x, y)
            if retune:
                self._tuned = {"rung": rung, "n": n, "names": names,
                               "theta": [float(t) for t in gpr.kernel_.theta]}
            self._fitted = (key, gpr, x, y)
        _, gpr, x, y = self._fitted
        if not context.pending:
            return gpr
        # Pending configurations: pessimistic guesses from the fitted model, kernel kept fixed.
        xp = np.array([self._vector(hps, nonfixed) for hps in context.pending])
        mu, sigma = gpr.predict(xp, return_std=True)
        from sklearn.base import clone

        lying = clone(gpr).set_params(kernel=gpr.kernel_, optimizer=None)
        lying.fit(np.vstack([x, xp]), np.concatenate([y, mu + sigma]))
        return lying

    def _ranked_points(self, gpr, bo, rng):
        """Acquisition minimisers first (local optimiser), then screened candidates by score."""
        import scipy.optimize

        bounds = bo._get_hp_bounds().astype(float)
        dims = bounds.shape[0]

        def ucb(points):
            mu, sigma = gpr.predict(np.atleast_2d(points), return_std=True)
            return np.asarray(mu).ravel() - self.beta * np.asarray(sigma).ravel()

        candidates = rng.uniform(bounds[:, 0], bounds[:, 1], size=(self.num_candidates, dims))
        scores = ucb(candidates)
        order = np.argsort(scores, kind="stable")
        refined = []
        for i in order[:self.num_local]:
            result = scipy.optimize.minimize(lambda v: float(ucb(v)[0]), x0=candidates[i],
                                             bounds=bounds, method="L-BFGS-B",
                                             options={"maxiter": LOCAL_MAXITER})
            refined.append((float(np.ravel(result.fun)[0]), np.clip(result.x, 0.0, 1.0)))
        refined.sort(key=lambda item: item[0])
        for _, point in refined:
            yield point
        for i in order:
            yield candidates[i]

    def get_state(self) -> dict[str, Any]:
        return {"name": self.name, "proposals": self._proposals, "tuned": self._tuned}

    def set_state(self, state: dict[str, Any]) -> None:
        _check_name(self.name, state)
        self._proposals = int(state["proposals"])
        self._tuned = state.get("tuned")
        self._fitted = None


def _check_name(name: str, state: dict[str, Any]) -> None:
    if state.get("name") != name:
        raise ValueError(f"saved sampler state is for {state.get('name')!r}, not {name!r}")


def make_sampler(sampler: str | RandomSampler | BayesianSampler, seed: int = 0,
                 **options: Any) -> RandomSampler | BayesianSampler:
    """A sampler by name ("random" | "bayesian") or an instance passed through."""
    if isinstance(sampler, (RandomSampler, BayesianSampler)):
        if options:
            raise ValueError("sampler options cannot be given with a sampler instance")
        return sampler
    if sampler == "random":
        if options:
            raise ValueError(f"the random sampler takes no options, got {sorted(options)}")
        return RandomSampler()
    if sampler == "bayesian":
        return BayesianSampler(seed=seed, **options)
    raise ValueError(f"unknown sampler {sampler!r}; expected one of: {', '.join(SAMPLERS)}")
