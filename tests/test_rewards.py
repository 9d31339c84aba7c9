"""Reward functions on correct, incorrect and adversarial completions; real math-verify."""

from __future__ import annotations

import threading
import time

import pytest
from omegaconf import OmegaConf

from rlvr_sweeps.errors import UserError
from rlvr_sweeps.tasks.verifier import MathVerifier
from rlvr_sweeps.training.rewards import build_reward_functions, last_boxed, make_accuracy_reward, make_format_reward

ADVERSARIAL = {
    "deeply nested LaTeX": "\\boxed{" + "\\frac{" * 300 + "1" + "}{2}" * 300 + "}",
    "1 MB string": "x" * 1_000_000 + "\\boxed{",
    "huge exponent": "\\boxed{9^{9^{9^{9}}}}",
    "huge factorial": "\\boxed{100000000!}",
    "deep parentheses": "\\boxed{" + "(" * 5000 + "1" + ")" * 5000 + "}",
}


@pytest.fixture(scope="module")
def verifier():
    v = MathVerifier(timeout_s=5.0)
    yield v
    v.close()


def chat(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def test_accuracy_on_correct_and_incorrect_answers(verifier):
    reward = make_accuracy_reward(verifier)
    completions = ["so \\boxed{42}", "\\boxed{0.5}", "\\boxed{\\frac{138}{583}}", "\\boxed{13}", "no answer", ""]
    answers = ["42", "1/2", "138/583", "12", "7", "7"]
    assert reward(completions=completions, answer=answers) == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]


def test_accuracy_reads_chat_completions_and_gold_latex(verifier):
    reward = make_accuracy_reward(verifier)
    completions = [chat("Thus \\boxed{\\sqrt{3}/2}."), chat("\\boxed{-4}"), chat("\\boxed{4}")]
    assert reward(completions=completions, answer=["\\frac{\\sqrt{3}}{2}", "-4", "-4"]) == [1.0, 1.0, 0.0]


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_completion_scores_zero_in_bounded_time(verifier, name):
    started = time.monotonic()
    assert make_accuracy_reward(verifier)(completions=[ADVERSARIAL[name]], answer=["42"]) == [0.0]
    assert time.monotonic() - started < verifier.timeout_s + 1.0


def test_adversarial_completions_in_a_worker_thread(verifier):
    reward = make_accuracy_reward(verifier)
    results, errors = [], []

    def work():
        try:
            results.append(
                reward(completions=[*ADVERSARIAL.values(), "\\boxed{42}"], answer=["42"] * (len(ADVERSARIAL) + 1))
            )
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=len(ADVERSARIAL) * (verifier.timeout_s + 1) + 10)
    assert not thread.is_alive() and not errors
    assert results == [[0.0] * len(ADVERSARIAL) + [1.0]]


def test_a_check_that_outlives_the_hard_limit_is_killed_and_the_verifier_recovers():
    # math-verify's own timeouts are at least 1 s; a 0.3 s hard limit must end the check first
    verifier = MathVerifier(timeout_s=0.3)
    try:
        verdict = verifier.verify("42", ADVERSARIAL["deeply nested LaTeX"])
        assert verdict.error == "timeout" and not verdict.correct
        assert verifier.verify("42", "\\boxed{42}").correct  # a fresh worker took over
        assert verifier.killed_checks == 1
    finally:
        verifier.close()


def test_the_worker_outlives_the_time_limit_signal_slurm_sends_every_process_of_a_job(verifier):
    import os
    import signal
    import time

    assert verifier.verify("42", "\\boxed{42}").correct  # the worker is up
    os.kill(verifier._child.pid, signal.SIGUSR2)  # as SLURM's --signal=USR2 or a preflight's scancel would
    time.sleep(0.3)
    assert verifier._child.poll() is None and verifier.verify("7", "\\boxed{7}").correct
    assert signal.getsignal(signal.SIGUSR2) is not signal.SIG_IGN  # the parent keeps its own handling


def test_format_reward_wants_a_non_empty_final_box():
    reward = make_format_reward(max_chars=20_000)
    completions = ["\\boxed{3}", "\\boxed{}", "\\boxed{ }", "no box", chat("a \\boxed{x^{2}} b"), "\\boxed{unclosed"]
    assert reward(completions=completions) == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    started = time.monotonic()
    assert reward(completions=[ADVERSARIAL["1 MB string"]]) == [0.0]
    assert time.monotonic() - started < 1.0


def test_last_boxed_balances_braces():
    assert last_boxed("\\boxed{1} then \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert last_boxed("nothing") is None


def test_reward_functions_and_weights_follow_the_config(verifier):
    cfg = OmegaConf.create({"weights": {"accuracy": 1.0, "format": 0.25}, "max_chars": 100, "timeout_s": 5})
    functions, weights = build_reward_functions(cfg, verifier)
    assert [f.__name__ for f in functions] == ["accuracy_reward", "format_reward"] and weights == [1.0, 0.25]
    with pytest.raises(UserError, match="available"):
        build_reward_functions(
            OmegaConf.create({"weights": {"accuracy": 1.0, "lenght": 1.0}, "max_chars": 100}), verifier
        )


@pytest.mark.parametrize(
    "prediction,plain,strict",
    [
        ("7 - 4 =", True, False),  # the question restated: math-verify evaluates it to the answer
        ("\\boxed{7-4}", True, False),
        ("7 - 4 = 3", True, True),
        ("\\boxed{3}", True, True),
        ("The answer is 3.", True, True),
        ("\\boxed{4}", False, False),
    ],
)
def test_literal_numbers_refuse_a_restated_expression(prediction, plain, strict):
    checkers = MathVerifier(), MathVerifier(literal_numbers=True)
    try:
        assert [checker.verify("3", prediction).correct for checker in checkers] == [plain, strict]
    finally:
        for checker in checkers:
            checker.close()


def test_literal_numbers_leave_other_gold_answers_alone(verifier):
    strict = MathVerifier(literal_numbers=True)
    try:
        assert strict.verify("\\frac{1}{2}", "\\boxed{\\frac{1}{2}}").correct  # not an integer: checked as before
        assert strict.verify("1024", "\\boxed{1,024}").correct and strict.verify("-4", "so \\boxed{-4}").correct
    finally:
        strict.close()


def test_a_truncated_completion_scores_zero_when_score_truncated_is_off(verifier):
    cfg = OmegaConf.create({"weights": {"accuracy": 1.0, "format": 0.5}, "max_chars": 100, "score_truncated": False})
    functions, _ = build_reward_functions(cfg, verifier, max_completion_length=4, eos_token_ids={9})
    completions = ["\\boxed{42}", "\\boxed{42}", "\\boxed{42}"]
    ids = [[1, 2, 3, 9], [1, 2, 3, 4], [1, 9]]  # ended at the limit with EOS, cut at the limit, short
    for function in functions:
        assert function(completions=completions, completion_ids=ids, answer=["42"] * 3)[1] == 0.0
        assert function(completions=completions, completion_ids=ids, answer=["42"] * 3)[0] > 0
    plain, _ = build_reward_functions(OmegaConf.merge(cfg, {"score_truncated": True}), verifier, 4, {9})
    assert plain[0](completions=completions, completion_ids=ids, answer=["42"] * 3) == [1.0, 1.0, 1.0]
    assert [f.__name__ for f in functions] == ["accuracy_reward", "format_reward"]  # as TRL logs them
