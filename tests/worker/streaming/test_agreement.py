from __future__ import annotations

from livenexus_worker.streaming.agreement import LocalAgreement


def test_prefix_agreed_by_two_hypotheses_becomes_stable() -> None:
    la = LocalAgreement()
    assert la.update("the quick") == ("", "the quick")
    assert la.update("the quick brown") == ("the quick", "brown")
    assert la.update("the quick brown fox jumps") == ("the quick brown", "fox jumps")


def test_stable_never_shrinks_even_if_hypothesis_wanders() -> None:
    la = LocalAgreement()
    la.update("hello world again")
    la.update("hello world and")
    assert la.committed == ["hello", "world"]
    stable, _unstable = la.update("yellow word and more")
    assert stable == "hello world"
    assert la.committed == ["hello", "world"]


def test_case_and_punctuation_do_not_break_agreement() -> None:
    la = LocalAgreement()
    la.update("Hello, world")
    stable, unstable = la.update("hello world. How")
    assert stable == "hello world.", "the newer spelling: it heard what follows, its full stop is the better guess"
    assert unstable == "How"


def test_reset() -> None:
    la = LocalAgreement()
    la.update("a b")
    la.update("a b")
    la.reset()
    assert la.update("c") == ("", "c")
