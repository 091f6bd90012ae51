"""ASHA bookkeeping (tuners.rungs): budgets, exact promotions, ties, brackets, state, invariants.

Pure Python: nothing here imports TensorFlow or keras-tuner.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuners.rungs import AshaLadder, rung_budgets

ROOT = Path(__file__).resolve().parents[2]


def test_rungs_module_imports_no_tensorflow_or_keras_tuner():
    code = ("import sys, tuners.rungs; "
            "bad = [m for m in ('tensorflow', 'keras', 'keras_tuner') if m in sys.modules]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("args, budgets", [
    ((1, 27, 3), [1, 3, 9, 27]),
    ((5, 100, 3), [5, 15, 45, 100]),
    ((10, 200, 4), [10, 40, 160, 200]),
    ((1, 100, 4), [1, 4, 16, 64, 100]),
    ((7, 7, 3), [7]),
    ((2, 3, 2), [2, 3]),
])
def test_rung_budgets(args, budgets):
    assert rung_budgets(*args) == budgets


@pytest.mark.parametrize("kwargs, message", [
    (dict(min_epochs=10, max_epochs=5, reduction_factor=3),
     "min_epochs (10) must be <= max_epochs (5)"),
    (dict(min_epochs=1, max_epochs=5, reduction_factor=1),
     "reduction_factor must be an integer >= 2, got 1"),
    (dict(min_epochs=0, max_epochs=5, reduction_factor=3),
     "min_epochs must be an integer >= 1, got 0"),
    (dict(min_epochs=1, max_epochs=27, reduction_factor=3, brackets=5),
     "brackets (5) must be <= the number of rungs (4) for min_epochs=1, max_epochs=27, "
     "reduction_factor=3"),
    (dict(min_epochs=1, max_epochs=27, reduction_factor=3, brackets=0),
     "brackets must be an integer >= 1, got 0"),
])
def test_ladder_argument_errors(kwargs, message):
    with pytest.raises(ValueError) as err:
        AshaLadder(**kwargs)
    assert str(err.value) == message


def _promote_all(ladder):
    """Run every promotion currently allowed; returns them in decision order."""
    done = []
    while (p := ladder.next_promotion()) is not None:
        ladder.promote(p)
        done.append(p)
    return done


def test_27_configurations_promote_9_then_3_then_1():
    ladder = AshaLadder(1, 27, 3)
    # losses in a scrambled order: config c has loss (c * 7) % 27, all distinct
    losses = {f"c{c}": float((c * 7) % 27) for c in range(27)}
    for key, loss in losses.items():
        ladder.record(0, 0, key, loss)
    first = _promote_all(ladder)
    best9 = sorted(losses, key=losses.get)[:9]
    assert [p.key for p in first] == best9  # best first
    assert all((p.rung, p.from_epochs, p.to_epochs) == (0, 1, 3) for p in first)
    # their rung-1 results (same keys reused as result ids for brevity): reverse the order
    rung1 = {f"{k}@1": 100.0 - i for i, k in enumerate(best9)}
    for key, loss in rung1.items():
        ladder.record(0, 1, key, loss)
    second = _promote_all(ladder)
    assert [p.key for p in second] == sorted(rung1, key=rung1.get)[:3]
    assert all((p.rung, p.from_epochs, p.to_epochs) == (1, 3, 9) for p in second)
    rung2 = {"a@2": 3.0, "b@2": 1.0, "c@2": 2.0}
    for key, loss in rung2.items():
        ladder.record(0, 2, key, loss)
    third = _promote_all(ladder)
    assert [(p.key, p.rung, p.to_epochs) for p in third] == [("b@2", 2, 27)]
    ladder.record(0, 3, "b@3", 0.5)
    assert ladder.next_promotion() is None  # nothing leaves the top rung
    assert [ladder.rung_size(k) for k in range(4)] == [27, 9, 3, 1]


def test_promotion_needs_eta_results_and_respects_floor():
    ladder = AshaLadder(1, 9, 3)
    ladder.record(0, 0, "a", 2.0)
    ladder.record(0, 0, "b", 1.0)
    assert ladder.next_promotion() is None  # floor(2/3) = 0
    ladder.record(0, 0, "c", 3.0)
    p = ladder.next_promotion()
    assert (p.key, p.loss) == ("b", 1.0)
    ladder.promote(p)
    ladder.record(0, 0, "d", 0.5)  # n=4: top 1 is d (b is no longer in the top 1)
    assert ladder.next_promotion().key == "d"
    ladder.promote(ladder.next_promotion())
    ladder.record(0, 0, "e", 9.0)
    assert ladder.next_promotion() is None  # n=5: top 1 = d, already promoted
    ladder.record(0, 0, "f", 9.0)  # n=6: top 2 = d, b: both promoted
    assert ladder.next_promotion() is None


def test_higher_rungs_are_served_first():
    ladder = AshaLadder(1, 27, 3)
    for i, key in enumerate("abc"):
        ladder.record(0, 0, key, float(i))
    for i, key in enumerate(["x", "y", "z"]):
        ladder.record(0, 1, key, float(i))
    p = ladder.next_promotion()
    assert (p.key, p.rung) == ("x", 1)
    ladder.promote(p)
    assert (ladder.next_promotion().key, ladder.next_promotion().rung) == ("a", 0)


def test_ties_go_to_the_earliest_recorded():
    ladder = AshaLadder(1, 9, 3)
    for key in ["p", "q", "r", "s", "t", "u"]:
        ladder.record(0, 0, key, 1.0)
    assert [p.key for p in _promote_all(ladder)] == ["p", "q"]


def test_duplicate_result_is_ignored_and_nan_rejected():
    ladder = AshaLadder(1, 9, 3)
    assert ladder.record(0, 0, "a", 1.0) is True
    assert ladder.record(0, 0, "a", 0.0) is False
    assert ladder.rung_size(0) == 1
    with pytest.raises(ValueError, match="cannot record a NaN loss for result 'b'"):
        ladder.record(0, 0, "b", float("nan"))


def test_brackets_start_at_their_rung_and_keep_separate_results():
    ladder = AshaLadder(1, 27, 3, brackets=3)
    dealt = [ladder.start_config() for _ in range(6)]
    assert dealt == [(0, 0, 1), (1, 1, 3), (2, 2, 9)] * 2
    with pytest.raises(ValueError, match=r"no rung 0 in bracket 1 \(rungs 1..3\)"):
        ladder.record(1, 0, "x", 1.0)
    for i in range(3):
        ladder.record(1, 1, f"b1-{i}", float(i))
    ladder.record(0, 1, "b0-0", -5.0)
    ladder.record(0, 1, "b0-1", -4.0)
    # bracket 0 has 2 results at rung 1 (none promotable); bracket 1 has 3 (its best goes)
    p = ladder.next_promotion()
    assert (p.key, p.bracket, p.rung, p.to_epochs) == ("b1-0", 1, 1, 9)
    assert ladder.rung_size(1) == 5 and ladder.rung_size(1, bracket=0) == 2


def test_observations_cap_keeps_best_and_most_recent():
    ladder = AshaLadder(1, 9, 3)
    for i in range(20):
        ladder.record(0, 0, f"k{i}", float((i * 13) % 20))  # loss 0 at k0, 1 at k17, ...
    assert len(ladder.observations(0)) == 20
    obs = ladder.observations(0, limit=6)
    keys = [k for k, _, _ in obs]
    # best 3 are losses 0, 1, 2 -> k0, k17, k14; then the 3 most recent others k19, k18, k16
    assert sorted(keys) == sorted(["k0", "k17", "k14", "k19", "k18", "k16"])
    assert [s for _, _, s in obs] == sorted(s for _, _, s in obs)


def test_state_round_trip_gives_identical_decisions():
    def fill(ladder, start, stop):
        for i in range(start, stop):
            ladder.record(0, 0, f"k{i}", float((i * 37) % 101))
            if i % 4 == 3:
                p = ladder.next_promotion()
                if p:
                    ladder.promote(p)
                    ladder.record(0, p.rung + 1, f"{p.key}+", p.loss / 2)

    a = AshaLadder(1, 27, 3)
    fill(a, 0, 40)
    b = AshaLadder(1, 27, 3)
    b.set_state(json.loads(json.dumps(a.get_state())))
    assert b.get_state() == a.get_state()
    fill(a, 40, 90)
    fill(b, 40, 90)
    assert b.get_state() == a.get_state()
    assert _promote_all(a) == _promote_all(b)
    with pytest.raises(ValueError, match="saved ASHA state has settings"):
        AshaLadder(1, 27, 4).set_state(a.get_state())


def _brute_force_candidate(results, promoted, eta):
    """(key) the naive rule would promote from one rung's results, or None."""
    ranked = sorted(results, key=lambda r: (r[1], r[2]))
    for key, _, _ in ranked[:len(ranked) // eta]:
        if key not in promoted:
            return key
    return None


@settings(max_examples=60, deadline=None)
@given(eta=st.integers(2, 4),
       events=st.lists(st.tuples(st.booleans(), st.integers(0, 6)), min_size=1, max_size=120))
def test_every_promotion_is_in_the_top_of_its_rung(eta, events):
    """Random interleavings of results and decisions; each promotion checked by brute force."""
    ladder = AshaLadder(1, eta ** 3, eta)
    results = {k: [] for k in range(4)}  # rung -> [(key, loss, seq)]
    promoted = {k: set() for k in range(4)}
    waiting = []  # configurations promoted and not yet reported at the next rung
    seq = 0
    for n, (decide, loss) in enumerate(events):
        if decide:
            p = ladder.next_promotion()
            expected = None
            for k in range(2, -1, -1):
                expected = _brute_force_candidate(results[k], promoted[k], eta)
                if expected is not None:
                    assert p is not None and (p.key, p.rung) == (expected, k)
                    top = sorted(results[k], key=lambda r: (r[1], r[2]))[:len(results[k]) // eta]
                    assert p.key in {r[0] for r in top}
                    break
            if expected is None:
                assert p is None
            else:
                ladder.promote(p)
                promoted[p.rung].add(p.key)
                waiting.append((p.key, p.rung + 1))
        elif waiting and loss % 2:
            key, rung = waiting.pop(0)  # out of order w.r.t. new configurations
            ladder.record(0, rung, key, float(loss))
            results[rung].append((key, float(loss), seq))
            seq += 1
        else:
            key = f"n{n}"
            ladder.record(0, 0, key, float(loss))  # small integer losses: many ties
            results[0].append((key, float(loss), seq))
            seq += 1
    assert ladder.results_recorded == seq
