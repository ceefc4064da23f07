"""A sandbox that runs untrusted candidate programs against tests (LiveCodeBench-style grading, spec §6.2).

Every test runs in a fresh `python -I -B` subprocess (this file executed as a script) inside a private
temporary directory that is deleted afterwards, with a stripped environment, stdin from a file, and stdout and
stderr read through pipes and capped at `max_output_bytes` (a flood kills the run). The parent kills the
child's whole process group at a wall-clock deadline of `time_limit_s` + 1 s (interpreter start-up). Before
the candidate's code is compiled, the child:

- sets resource limits: RLIMIT_CPU (ceil(time_limit_s), SIGKILL one second later), RLIMIT_AS (`memory_mb`),
  RLIMIT_FSIZE (16 MiB per file), RLIMIT_NOFILE (64), RLIMIT_NPROC (0: no new processes; the kernel ignores it
  for root) and RLIMIT_CORE (0);
- installs a `sys.addaudithook` hook (hooks cannot be removed from Python code) that refuses, with
  PermissionError: every `socket.*` event (creation, connect, bind, DNS lookups...); opening a file for
  writing, and removing, renaming, linking or creating a path, outside the temporary directory (os.devnull,
  /dev/stdout and /dev/stderr excepted; paths are resolved with realpath, so symlinks do not help); chmod and
  chown; `os.fork`, `os.forkpty`, `os.system`, `os.exec*`, `os.spawn*`, `os.posix_spawn*`, `subprocess.Popen`;
  `os.kill`, `os.killpg` and `signal.pthread_kill`; raising resource limits; `gc.get_referrers`/`get_objects`
  (the usual way to reach the hook's state); and the import of `ctypes`/`_ctypes` (ImportError, so libraries
  that use ctypes optionally, like numpy, still import) and any other `ctypes.*` event.

This is NOT a security boundary against a determined attacker: audit hooks only see what CPython reports. A
program can still reach already-imported C internals (e.g. `_posixsubprocess.fork_exec`), open a file relative
to a directory descriptor (`os.open(..., dir_fd=...)`, whose audit event has no directory), read any file the
user can read, or exhaust CPU and memory within the limits; as root RLIMIT_NPROC does not stop forks. It keeps
honest-but-buggy model outputs (infinite loops, memory bombs, stray writes, accidental network use) from
harming the host or each other. Run code from unknown sources in a container or VM as well.

Test format: `{"input": str, "output": str}`. Without `fn_name` the program reads `input` on stdin and its
stdout must match `output` line by line after stripping trailing whitespace and trailing blank lines, with
numeric tokens equal within an absolute-or-relative error of 1e-6 (integers exactly). With `fn_name`
(call-based, LeetCode style, as LiveCodeBench stores it): `input` holds one JSON value per line, the positional
arguments in order; `output` is the JSON of the return value, compared structurally with the same float
tolerance. The function is `Solution().<fn_name>` if the program defines a `Solution` class with that method,
else a top-level function; call-based programs run with `from typing import *` and `from collections import *`
and the modules collections, heapq, bisect, math, itertools and functools pre-imported, as on LeetCode.

`run_tests` is thread-safe (no `preexec_fn`), so callers may grade many candidates from a thread pool.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Sequence

STATUSES = ("ok", "wrong_answer", "timeout", "runtime_error", "memory", "compile_error", "no_code")

_STARTUP_SLACK_S = 1.0  # wall-clock allowance for interpreter start-up on a loaded machine
_FILE_LIMIT_BYTES = 16 << 20
_OPEN_FILES_LIMIT = 64
_FLOAT_TOL = 1e-6
_DETAIL_CHARS = 300
# Exit codes of the child harness (candidates can fake them; that only changes how their failure is labelled).
_EXIT_COMPILE, _EXIT_MEMORY, _EXIT_RUNTIME = 101, 102, 103
_SOLUTION_FILE, _ARGS_FILE, _INPUT_FILE = "solution.py", "args.json", "input.txt"


@dataclasses.dataclass(frozen=True)
class Verdict:
  """The result of `run_tests`: `status` is one of `STATUSES`; `detail` says what failed (empty when ok)."""
  passed: bool
  num_passed: int
  num_tests: int
  status: str
  detail: str


def extract_code(text: str) -> str | None:
  """The last fenced code block of the answer region of `text` (after the last `</think>`), or None.

  As LiveCodeBench's `extract_code`: the lines strictly between the last two lines that contain ```.
  """
  close = text.rfind("</think>")
  lines = (text[close + len("</think>"):] if close != -1 else text).split("\n")
  fences = [i for i, line in enumerate(lines) if "```" in line]
  if len(fences) < 2:
    return None
  return "\n".join(lines[fences[-2] + 1:fences[-1]])


# ---------------------------------------------------------------------------------------------------------
# Output comparison.

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_INTEGER = re.compile(r"^[+-]?\d+$")


def _floats_close(got: float, expected: float) -> bool:
  """Absolute or relative error at most 1e-6 (the usual competitive-programming checker)."""
  return abs(got - expected) <= _FLOAT_TOL * max(1.0, abs(expected))


def _tokens_match(got: str, expected: str) -> bool:
  if got == expected:
    return True
  if _INTEGER.match(got) and _INTEGER.match(expected):
    return int(got) == int(expected)  # '007' == '7'; large integers never compare as floats
  return bool(_NUMBER.match(got) and _NUMBER.match(expected)) and _floats_close(float(got), float(expected))


def _lines(text: str) -> list[str]:
  lines = [line.rstrip() for line in text.split("\n")]
  while lines and not lines[-1]:
    lines.pop()
  return lines


def stdout_matches(got: str, expected: str) -> bool:
  """Whether program output `got` matches `expected`: line by line, trailing whitespace and blank lines
  ignored, numeric tokens within 1e-6 (absolute or relative; integers exactly)."""
  got_lines, expected_lines = _lines(got), _lines(expected)
  if len(got_lines) != len(expected_lines):
    return False
  for g, e in zip(got_lines, expected_lines):
    if g != e:
      g_tokens, e_tokens = g.split(), e.split()
      if len(g_tokens) != len(e_tokens) or not all(map(_tokens_match, g_tokens, e_tokens)):
        return False
  return True


def values_match(got, expected) -> bool:
  """Structural equality of JSON values, floats within 1e-6 (absolute or relative); bools are not numbers."""
  if isinstance(got, bool) or isinstance(expected, bool):
    return got is expected
  if isinstance(got, (int, float)) and isinstance(expected, (int, float)):
    if isinstance(got, int) and isinstance(expected, int):
      return got == expected
    return _floats_close(float(got), float(expected))
  if isinstance(got, list) and isinstance(expected, list):
    return len(got) == len(expected) and all(map(values_match, got, expected))
  if isinstance(got, dict) and isinstance(expected, dict):
    return got.keys() == expected.keys() and all(values_match(got[k], expected[k]) for k in expected)
  return got == expected


# ---------------------------------------------------------------------------------------------------------
# Parent side.


def _check_tests(tests: Sequence[dict], fn_name: str | None) -> list[tuple[str, object]]:
  """(stdin text or JSON args array, expected stdout or decoded value) per test; ValueError names a bad one."""
  if isinstance(tests, (str, bytes)) or not isinstance(tests, Sequence) or not tests:
    raise ValueError(f"tests must be a non-empty sequence of {{'input', 'output'}} dicts, got {tests!r:.100}")
  out = []
  for i, test in enumerate(tests):
    if not isinstance(test, dict) or not isinstance(test.get("input"), str) or not isinstance(
        test.get("output"), str):
      raise ValueError(f"test {i} must be a dict with string 'input' and 'output', got {test!r:.200}")
    if fn_name is None:
      out.append((test["input"], test["output"]))
      continue
    try:
      args = [json.loads(line) for line in test["input"].split("\n") if line.strip()]
      expected = json.loads(test["output"])
    except json.JSONDecodeError as e:
      raise ValueError(f"test {i}: call-based input (one JSON value per line) and output must be JSON: {e}") from e
    out.append((json.dumps(args), expected))
  return out


def _clip(text: str) -> str:
  text = text.strip()
  return text if len(text) <= _DETAIL_CHARS else "..." + text[-_DETAIL_CHARS:]


def _kill_group(proc: subprocess.Popen) -> None:
  try:
    os.killpg(proc.pid, signal.SIGKILL)
  except ProcessLookupError:
    pass


def _communicate(proc: subprocess.Popen, deadline: float, cap: int) -> tuple[bytes, bytes, str | None]:
  """Reads stdout and stderr until the child ends: (stdout, stderr, None | "timeout" | "flood")."""
  buffers = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
  stop = None
  try:
    with selectors.DefaultSelector() as selector:
      for fd in buffers:
        selector.register(fd, selectors.EVENT_READ)
      while selector.get_map() and stop is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
          stop = "timeout"
          break
        for key, _ in selector.select(remaining):
          chunk = os.read(key.fd, 1 << 16)
          if not chunk:
            selector.unregister(key.fd)
          buffers[key.fd] += chunk
          if len(buffers[key.fd]) > cap:
            stop = "flood"
    if stop is None:
      try:  # both pipes may close long before the process ends
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
      except subprocess.TimeoutExpired:
        stop = "timeout"
  finally:
    _kill_group(proc)  # also anything the candidate left behind in its session, and on any error here
  proc.wait()
  return bytes(buffers[proc.stdout.fileno()]), bytes(buffers[proc.stderr.fileno()]), stop


def _run_one(code: str, stdin_or_args: str, expected, fn_name: str | None, time_limit_s: float,
             memory_mb: int, max_output_bytes: int) -> tuple[str, str]:
  """Runs one test in a fresh child and temporary directory: (status, detail)."""
  root = os.path.realpath(tempfile.mkdtemp(prefix="zaya_sandbox_"))
  try:
    with open(os.path.join(root, _SOLUTION_FILE), "w", encoding="utf-8", errors="replace") as f:
      f.write(code)
    input_path = os.path.join(root, _INPUT_FILE if fn_name is None else _ARGS_FILE)
    with open(input_path, "w", encoding="utf-8", errors="replace") as f:
      f.write(stdin_or_args)
    config = {"root": root, "fn_name": fn_name, "cpu_s": max(1, math.ceil(time_limit_s)),
              "memory_bytes": memory_mb << 20}
    env = {"PATH": os.defpath, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": root, "TMPDIR": root,
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    stdin = open(input_path, "rb") if fn_name is None else subprocess.DEVNULL
    try:
      deadline = time.monotonic() + time_limit_s + _STARTUP_SLACK_S
      proc = subprocess.Popen([sys.executable, "-I", "-B", os.path.abspath(__file__), json.dumps(config)],
                              stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=root, env=env,
                              start_new_session=True)
      with proc:
        stdout, stderr, stop = _communicate(proc, deadline, max_output_bytes)
    finally:
      if stdin is not subprocess.DEVNULL:
        stdin.close()
  finally:
    shutil.rmtree(root, ignore_errors=True)
  return _judge(proc.returncode, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace"), stop,
                expected, fn_name, time_limit_s, max_output_bytes)


def _judge(returncode: int, stdout: str, stderr: str, stop: str | None, expected, fn_name: str | None,
           time_limit_s: float, max_output_bytes: int) -> tuple[str, str]:
  if stop == "flood":
    return "runtime_error", f"output limit ({max_output_bytes} bytes) exceeded"
  # A SIGKILL the parent did not send is the hard CPU limit (or, rarely, the kernel's OOM killer).
  if stop == "timeout" or returncode in (-signal.SIGXCPU, -signal.SIGKILL):
    return "timeout", f"time limit ({time_limit_s:g} s) exceeded"
  if returncode == _EXIT_COMPILE:
    return "compile_error", _clip(stderr)
  if returncode == _EXIT_MEMORY:
    return "memory", "MemoryError"
  if returncode == _EXIT_RUNTIME:
    return "runtime_error", _clip(stderr)
  if returncode != 0:
    reason = (f"killed by {signal.strsignal(-returncode) or -returncode}" if returncode < 0
              else f"exit status {returncode}")
    return "runtime_error", f"{reason}: {_clip(stderr)}"
  if fn_name is None:
    if stdout_matches(stdout, expected):
      return "ok", ""
    return "wrong_answer", f"expected {_clip(expected)!r}, got {_clip(stdout)!r}"
  try:
    got = json.loads(stdout.rstrip("\n").rsplit("\n", 1)[-1])  # the harness writes the result last
  except json.JSONDecodeError:
    return "runtime_error", f"no result from the harness: {_clip(stderr)}"
  if values_match(got, expected):
    return "ok", ""
  return "wrong_answer", f"expected {_clip(json.dumps(expected))}, got {_clip(json.dumps(got))}"


def run_tests(code: str, tests: Sequence[dict], *, fn_name: str | None = None, time_limit_s: float = 6.0,
              memory_mb: int = 512, max_output_bytes: int = 1 << 20) -> Verdict:
  """Runs `code` on every test (in order, stopping at the first failure), each in a fresh sandboxed child.

  `tests` are `{"input", "output"}` dicts (module docstring for the stdin and call-based formats);
  `time_limit_s` is per test (CPU, with 1 s more wall-clock for start-up), `memory_mb` the address-space
  limit. Raises ValueError for malformed tests or limits; a bad program is a failed Verdict, never an error.
  """
  checked = _check_tests(tests, fn_name)
  if time_limit_s <= 0 or memory_mb <= 0 or max_output_bytes <= 0:
    raise ValueError(f"limits must be positive, got time_limit_s={time_limit_s}, memory_mb={memory_mb}, "
                     f"max_output_bytes={max_output_bytes}")
  if not isinstance(code, str) or not code.strip():
    return Verdict(False, 0, len(checked), "no_code", "no code to run")
  for i, (stdin_or_args, expected) in enumerate(checked):
    status, detail = _run_one(code, stdin_or_args, expected, fn_name, time_limit_s, memory_mb, max_output_bytes)
    if status != "ok":
      return Verdict(False, i, len(checked), status, f"test {i}: {detail}")
  return Verdict(True, len(checked), len(checked), "ok", "")


def code_reward(text: str, tests: Sequence[dict], **limits) -> float:
  """1.0 if the last code block of `text` (`extract_code`) passes every test, else 0.0.

  `limits` are `run_tests`' keyword arguments (`fn_name`, `time_limit_s`, `memory_mb`, `max_output_bytes`).
  """
  code = extract_code(text)
  return float(code is not None and run_tests(code, tests, **limits).passed)


# ---------------------------------------------------------------------------------------------------------
# Child side: runs when this file is executed as a script by `_run_one`.

_REFUSED_EVENTS = frozenset({
    "os.fork", "os.forkpty", "os.system", "os.exec", "os.spawn", "os.posix_spawn", "subprocess.Popen",
    "os.kill", "os.killpg", "signal.pthread_kill", "resource.setrlimit", "resource.prlimit",
    "os.chmod", "os.chown", "os.chflags", "os.lchmod", "os.lchown", "gc.get_referrers", "gc.get_objects",
    "gc.get_referents"})
_PATH_EVENTS = frozenset({
    "os.remove", "os.rmdir", "os.rename", "os.link", "os.symlink", "os.mkdir", "os.truncate", "os.utime",
    "os.setxattr", "os.removexattr", "shutil.rmtree", "shutil.chown"})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_ALWAYS_WRITABLE = frozenset({os.devnull, "/dev/stdout", "/dev/stderr"})


def _make_audit_hook(root: str):
  """The hook described in the module docstring, confining writes to `root`."""
  realpath, fspath, fsdecode = os.path.realpath, os.fspath, os.fsdecode

  def inside(path) -> bool:
    if isinstance(path, int):  # an already-open descriptor: its own open was audited
      return True
    name = fsdecode(fspath(path))
    if os.path.abspath(name) in _ALWAYS_WRITABLE:
      return True
    real = realpath(name)
    return real == root or real.startswith(root + os.sep)

  def hook(event: str, args: tuple) -> None:
    if event == "open":
      path, mode, flags = args
      writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & _WRITE_FLAGS)
      if writing and path is not None and not inside(path):
        raise PermissionError(f"sandbox: writing outside the working directory is not allowed: {path!r}")
    elif event == "import":
      if args[0] in ("ctypes", "_ctypes") or args[0].startswith("ctypes."):
        raise ImportError("sandbox: ctypes is not allowed")
    elif event in _REFUSED_EVENTS or event.startswith(("socket.", "ctypes.")):
      raise PermissionError(f"sandbox: {event} is not allowed")
    elif event in _PATH_EVENTS:
      for arg in args:
        if isinstance(arg, (str, bytes, os.PathLike)) and not inside(arg):
          raise PermissionError(f"sandbox: {event} outside the working directory is not allowed: {arg!r}")

  return hook


_CALL_PRELUDE = ("from typing import *\nfrom collections import *\n"
                 "import collections, heapq, bisect, math, itertools, functools\n")


def _child_main(config_json: str) -> None:
  config = json.loads(config_json)
  root, fn_name = config["root"], config["fn_name"]
  with open(os.path.join(root, _SOLUTION_FILE), encoding="utf-8") as f:
    source = f.read()
  args = None
  if fn_name is not None:
    with open(os.path.join(root, _ARGS_FILE), encoding="utf-8") as f:
      args = json.load(f)
  os.chdir(root)
  cpu = config["cpu_s"]
  for limit, value in ((resource.RLIMIT_CPU, (cpu, cpu + 1)), (resource.RLIMIT_AS, config["memory_bytes"]),
                       (resource.RLIMIT_FSIZE, _FILE_LIMIT_BYTES), (resource.RLIMIT_NOFILE, _OPEN_FILES_LIMIT),
                       (resource.RLIMIT_NPROC, 0), (resource.RLIMIT_CORE, 0)):
    resource.setrlimit(limit, value if isinstance(value, tuple) else (value, value))
  sys.addaudithook(_make_audit_hook(root))
  sys.stdout.reconfigure(encoding="utf-8", errors="replace")
  main = types.ModuleType("__main__")
  main.__file__ = os.path.join(root, _SOLUTION_FILE)
  sys.modules["__main__"] = main
  try:
    compiled = compile(source, main.__file__, "exec")
  except (SyntaxError, ValueError) as e:  # ValueError: null bytes in the source
    sys.stderr.write("".join(traceback.format_exception_only(e)))
    sys.stderr.flush()
    os._exit(_EXIT_COMPILE)
  try:
    if fn_name is None:
      exec(compiled, main.__dict__)
      return
    exec(_CALL_PRELUDE, main.__dict__)
    exec(compiled, main.__dict__)
    solution = main.__dict__.get("Solution")
    if isinstance(solution, type) and hasattr(solution, fn_name):
      fn = getattr(solution(), fn_name)
    elif callable(main.__dict__.get(fn_name)):
      fn = main.__dict__[fn_name]
    else:
      raise NameError(f"the program defines neither {fn_name}() nor Solution.{fn_name}()")
    result = json.dumps(fn(*args))
    sys.stdout.flush()
    sys.stdout.write("\n" + result + "\n")
  except MemoryError:
    os._exit(_EXIT_MEMORY)
  except SystemExit as e:
    if fn_name is not None or e.code not in (None, 0):
      raise
  except BaseException as e:  # the traceback without the harness's own frame
    traceback.print_exception(type(e), e, e.__traceback__.tb_next)
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(_EXIT_RUNTIME)


if __name__ == "__main__":
  _child_main(sys.argv[1])
