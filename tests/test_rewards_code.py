"""The code sandbox: verdicts for correct, wrong, looping, memory-hungry and misbehaving programs."""

import os
import resource
import socket
import tempfile
import textwrap
import time

import pytest

from zaya_jax.rewards import Verdict, code_reward, extract_code, run_tests
from zaya_jax.rewards import code as rcode

ADD = [{"input": "3 4\n", "output": "7\n"}, {"input": "10 -2", "output": "8"}]
FAST = dict(time_limit_s=1.0, memory_mb=256)


def _run(code, tests=ADD, **kw):
  return run_tests(textwrap.dedent(code), tests, **(FAST | kw))


def test_extract_code_takes_the_last_block_of_the_answer():
  text = "```python\nprint(1)\n```\nthen\n```\nprint(2)\nprint(3)\n```\nbye"
  assert extract_code(text) == "print(2)\nprint(3)"
  assert extract_code("```python\nx = 1\n```") == "x = 1"
  assert extract_code("no code") is None and extract_code("```python\nunclosed") is None
  assert extract_code("<think>```\ndraft\n```</think>\n```py\nfinal\n```") == "final"
  assert extract_code("<think>```\ndraft\n```</think> no code after") is None


@pytest.mark.parametrize("got, expected, match", [
    ("7\n", "7", True),
    ("1 2  \n3\n\n\n", "1 2\n3", True),
    ("1 2\n3", "1 2 3", False),
    ("0.3333333", "0.333333333", True),
    ("0.334", "0.333333333", False),
    ("1e-9", "0", True),  # absolute error below 1e-6
    ("1000000.5", "1000000", True),  # relative error below 1e-6
    ("1000000000000000000001", "1000000000000000000000", False),  # integers compare exactly
    ("007", "7", True),
    ("YES", "yes", False),
    ("nan", "nan", True),
    ("inf", "1e999", False),  # only decimal literals get the tolerance
])
def test_stdout_matches(got, expected, match):
  assert rcode.stdout_matches(got, expected) == match


@pytest.mark.parametrize("got, expected, match", [
    ([1, 2.0000001], [1, 2], True), ([1, 2], [2, 1], False), (True, 1, False), ({"a": 0.5}, {"a": 0.5}, True),
    ([[1], [2]], [[1], [2, 3]], False), ("x", "x", True), (None, None, True), (3, 3.0000000001, True),
])
def test_values_match(got, expected, match):
  assert rcode.values_match(got, expected) == match


def test_correct_program_passes_and_wrong_answer_stops_at_the_first_failure():
  assert _run("a, b = map(int, input().split())\nprint(a + b)") == Verdict(True, 2, 2, "ok", "")
  wrong = _run("a, b = map(int, input().split())\nprint(7)")
  assert (wrong.passed, wrong.num_passed, wrong.num_tests, wrong.status) == (False, 1, 2, "wrong_answer")
  assert "test 1" in wrong.detail and "'8'" in wrong.detail
  assert _run("print(7)\nraise SystemExit(0)", ADD[:1]).passed  # a clean exit after printing is fine


def test_float_tolerance_end_to_end():
  assert _run("print(1 / 3, 2 ** 70)", [{"input": "", "output": "0.333333333 1180591620717411303424"}]).passed


@pytest.mark.parametrize("program", [
    "while True:\n  pass",  # killed by the CPU limit
    "import os, time\nos.close(1)\nos.close(2)\ntime.sleep(60)",  # idle with closed pipes: the wall clock
])
def test_infinite_loop_is_killed_within_the_limit(program):
  start = time.monotonic()
  verdict = _run(program, time_limit_s=0.5)
  assert verdict.status == "timeout" and verdict.num_passed == 0
  assert time.monotonic() - start < 0.5 + rcode._STARTUP_SLACK_S + 2.0


def test_memory_bomb_is_contained():
  before = resource.getrlimit(resource.RLIMIT_AS)
  for bomb in ("x = bytearray(1 << 34)", "chunks = []\nwhile True:\n  chunks.append(bytearray(1 << 24))"):
    assert _run(bomb).status in ("memory", "runtime_error")
  assert resource.getrlimit(resource.RLIMIT_AS) == before
  assert len(bytearray((FAST["memory_mb"] + 64) << 20)) > FAST["memory_mb"] << 20  # beyond the child's limit


def test_network_is_refused():
  with socket.socket() as server:
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    port = server.getsockname()[1]
    probe = f"""
    import socket
    for attempt in (lambda: socket.create_connection(("127.0.0.1", {port}), timeout=1),
                    lambda: socket.getaddrinfo("localhost", 80), lambda: socket.socket()):
      try:
        attempt()
        print("allowed")
      except PermissionError as e:
        print("refused" if "sandbox" in str(e) else e)
    """
    assert _run(probe, [{"input": "", "output": "refused\nrefused\nrefused"}]).passed
    with pytest.raises(BlockingIOError):
      server.accept()  # nobody connected


def test_writes_outside_the_temp_dir_are_refused(tmp_path):
  target = tmp_path / "escaped.txt"
  probe = f"""
    import os
    target = {str(target)!r}
    open("in.txt", "w").close()
    for attempt in (lambda: open(target, "w"), lambda: open(target, "a"),
                    lambda: os.open(target, os.O_WRONLY | os.O_CREAT), lambda: os.symlink(target, "link"),
                    lambda: os.mkdir(target + ".d"), lambda: os.rename("in.txt", target)):
      try:
        attempt()
        print("allowed")
      except PermissionError:
        print("refused")
    """
  assert _run(probe, [{"input": "", "output": "refused\n" * 6}]).passed
  assert _run(f"open({str(target)!r}, 'w').write('x')").status == "runtime_error"
  assert not target.exists() and not (tmp_path / "escaped.txt.d").exists()


def test_writes_inside_the_temp_dir_are_allowed_and_the_dir_is_deleted(monkeypatch):
  made, real_mkdtemp = [], tempfile.mkdtemp

  def mkdtemp(**kw):
    made.append(real_mkdtemp(**kw))
    return made[-1]

  monkeypatch.setattr(rcode.tempfile, "mkdtemp", mkdtemp)
  program = """
    import os, tempfile
    with open("scratch.txt", "w") as f:
      f.write(input())
    os.mkdir("sub")
    with tempfile.NamedTemporaryFile("w", delete=False) as f:  # TMPDIR is the private directory
      f.write("x")
    print(open("scratch.txt").read(), os.path.dirname(f.name) == os.getcwd())
    """
  assert _run(program, [{"input": "hello", "output": "hello True"}]).passed
  assert len(made) == 1 and not os.path.exists(made[0])


def test_fork_and_subprocesses_are_refused():
  probe = """
    import os, subprocess
    for attempt in (os.fork, lambda: subprocess.run(["true"]), lambda: os.system("true"),
                    lambda: os.execv("/bin/true", ["true"]), lambda: os.kill(os.getppid(), 9)):
      try:
        attempt()
        print("allowed")
      except PermissionError:
        print("refused")
    """
  assert _run(probe, [{"input": "", "output": "refused\n" * 5}]).passed


def test_environment_is_stripped(monkeypatch):
  monkeypatch.setenv("ZAYA_TEST_SECRET", "hunter2")
  assert _run("import os\nprint('ZAYA_TEST_SECRET' in os.environ)", [{"input": "", "output": "False"}]).passed


def test_output_flood_is_capped():
  start = time.monotonic()
  verdict = _run("while True:\n  print('x' * 1000)", max_output_bytes=1 << 16)
  assert verdict.status == "runtime_error" and "output limit" in verdict.detail
  assert time.monotonic() - start < FAST["time_limit_s"]


CALL_TESTS = [{"input": "[2, 7, 11, 15]\n9", "output": "[0, 1]"}, {"input": "[3, 2, 4]\n6", "output": "[1, 2]"}]


def test_call_based_function_and_solution_method():
  function = """
    def two_sum(nums, target):
      seen = {}
      for i, x in enumerate(nums):
        if target - x in seen:
          return (seen[target - x], i)  # a tuple: JSON-encoded as a list
        seen[x] = i
    """
  method = """
    class Solution:
      def two_sum(self, nums: List[int], target: int) -> List[int]:  # List from the LeetCode prelude
        print("debug output is ignored")
        index = defaultdict(int)
        for i, x in enumerate(nums):
          if target - x in index:
            return [index[target - x], i]
          index[x] = i
    """
  assert _run(function, CALL_TESTS, fn_name="two_sum") == Verdict(True, 2, 2, "ok", "")
  assert _run(method, CALL_TESTS[1:], fn_name="two_sum").passed
  wrong = _run("def two_sum(nums, target):\n  return [0, 1]", CALL_TESTS, fn_name="two_sum")
  assert (wrong.status, wrong.num_passed) == ("wrong_answer", 1)
  missing = _run("def other(nums, target):\n  return [0, 1]", CALL_TESTS[:1], fn_name="two_sum")
  assert missing.status == "runtime_error" and "two_sum" in missing.detail


def test_compile_runtime_and_no_code_verdicts():
  assert _run("def f(:\n  pass").status == "compile_error"
  crash = _run("raise ValueError('boom')")
  assert crash.status == "runtime_error" and "ValueError: boom" in crash.detail
  assert _run("   \n").status == "no_code"
  with pytest.raises(ValueError, match="test 1"):
    run_tests("print(1)", [{"input": "", "output": "1"}, {"input": 3, "output": "1"}])
  with pytest.raises(ValueError, match="non-empty"):
    run_tests("print(1)", [])
  with pytest.raises(ValueError, match="JSON"):
    run_tests("def f(x): return x", [{"input": "not json", "output": "1"}], fn_name="f")


def test_code_reward():
  text = "Here is my solution.\n```python\na, b = map(int, input().split())\nprint(a + b)\n```\n"
  assert code_reward(text, ADD, **FAST) == 1.0
  assert code_reward(text.replace("a + b", "a - b"), ADD[:1], **FAST) == 0.0
  assert code_reward("no code block", ADD, **FAST) == 0.0
