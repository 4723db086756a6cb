"""The suite's time budget (tests/budget.py): a test or fixture over its budget fails, named, whatever the machine's
speed; the fixture's time is the fixture's, not the test's that happens to build it."""

import os
import re
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

CONFTEST = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
import budget

budget.FIXTURE_BUDGET_S = 0.05  # reference seconds: the fixture below takes 0.5 s, over it on any machine
budget.calibrate = lambda: budget.REFERENCE_CALIBRATION_S  # the reference machine's speed: no torch to import


def pytest_configure(config):
    budget.register(config)
"""

TESTS_FILE = """
import time

import pytest


def busy(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.fixture(scope="module")
def slow_fixture():
    busy(0.5)


@pytest.mark.budget(0.05)
def test_over_its_own_budget():
    busy(0.5)


def test_within_the_default_budget():
    busy(0.1)


def test_whose_set_up_builds_a_fixture_over_its_budget(slow_fixture):
    pass


def test_that_reuses_the_fixture_without_paying_for_it(slow_fixture):
    pass


@pytest.mark.slow
@pytest.mark.budget(0.05)
def test_slow_marked_tests_have_no_budget():
    busy(0.5)
"""


def run_inner(tmp_path, *flags, **env):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_inner.py").write_text(TESTS_FILE)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: slow\n")
    environment = {k: v for k, v in os.environ.items() if k != "KVASIR_TEST_BUDGET"} | env
    command = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *flags, "test_inner.py"]
    return subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True).stdout


def test_a_test_or_fixture_over_its_budget_fails_named_with_its_time_in_reference_seconds(tmp_path):
    out = run_inner(tmp_path)
    failed = {line.split("::")[1].split(" ")[0] for line in out.splitlines() if line.startswith("FAILED ")}
    assert failed == {"test_over_its_own_budget", "test_whose_set_up_builds_a_fixture_over_its_budget"}, out
    assert re.search(r"the test took 0\.\d s here = [\d.]+ reference seconds, over its budget of 0.05 ", out), out
    assert re.search(r"fixture slow_fixture took 0\.\d s here", out), out
    assert "3 passed" in out and "time budget (tests/budget.py)" in out
    # turned off, nothing fails on time, and the durations are still printed
    off = run_inner(tmp_path, KVASIR_TEST_BUDGET="off")
    assert "5 passed" in off and "reference seconds" in off, off


def test_under_xdist_each_worker_judges_its_tests_and_the_summary_names_the_slowest_of_all(tmp_path):
    """`make test` runs the suite in pytest-xdist workers: the budget still fails what is over it, and the controller's
    summary lists the workers' tests, not an empty line."""
    out = run_inner(tmp_path, "-n", "2", "--dist", "loadfile")
    failed = {line.split("::")[1].split(" ")[0] for line in out.splitlines() if line.startswith("FAILED ")}
    assert failed == {"test_over_its_own_budget", "test_whose_set_up_builds_a_fixture_over_its_budget"}, out
    slowest = next(line for line in out.splitlines() if line.startswith("own time of the slowest tests"))
    assert "test_over_its_own_budget" in slowest, out
    built = next(line for line in out.splitlines() if line.startswith("own time of the slowest fixtures"))
    assert "slow_fixture" in built, out
