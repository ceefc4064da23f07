"""A built-in, reasoning-first corpus: procedurally generated problems with verifiable answers.

Every problem comes with a step-by-step solution that ends in `\\boxed{answer}` and an exact `answer`
string, so the same generator serves pretraining text, SFT targets, RL rewards (`check_answer`) and
held-out evaluation.

Families (`FAMILIES`): "arithmetic" (multi-step integer expressions), "linear" (linear equations, a 2x2
system at difficulty 5), "modular" (modular sums, products and powers), "word" (shopping, travel and
savings stories) and "general" (procedural prose about a fictional village with a reading question, the
non-math text of a general phase). Difficulty runs over `DIFFICULTIES` (1..5) and grows the number of
steps and the size of the numbers.

Determinism and splits: `make_record(family, difficulty, seed, index, split)` draws from a generator
seeded by (seed, family, difficulty, index, attempt). A problem's split is a hash of its text
(`split_of`), and `make_record` redraws (attempt += 1) until the problem lands in the requested split, so
no problem text can appear in both "train" and "heldout".
"""

from __future__ import annotations

import functools
import hashlib
import re
import zlib
from fractions import Fraction

import numpy as np

FAMILIES = ("arithmetic", "linear", "modular", "word", "general")
MATH_FAMILIES = ("arithmetic", "linear", "modular", "word")
DIFFICULTIES = (1, 2, 3, 4, 5)
SPLITS = ("train", "heldout")
DEFAULT_HELDOUT_FRACTION = 0.1
_MAX_ATTEMPTS = 1000  # redraws to land in a split; at a 10% held-out rate failure odds are ~0.9**1000


class CorpusError(ValueError):
  """An unknown family, difficulty or split, or a malformed record."""


# ---------------------------------------------------------------------------------------------------------
# Families. Each takes (difficulty, rng) and returns (problem, solution steps, answer string).


def _int(rng: np.random.Generator, low: int, high: int) -> int:
  """A uniform integer in [low, high]."""
  return int(rng.integers(low, high + 1))


def _render(node) -> str:
  """An expression tree (int or (op, left, right)) as text; every inner operation is parenthesised."""
  if isinstance(node, int):
    return f"({node})" if node < 0 else str(node)
  op, left, right = node
  parts = [_render(child) if isinstance(child, int) else f"({_render(child)})" for child in (left, right)]
  return f"{parts[0]} {op} {parts[1]}"


def _apply(op: str, a: int, b: int) -> int:
  return {"+": a + b, "-": a - b, "*": a * b}[op]


def _reduce_once(node):
  """Evaluates the leftmost operation whose operands are both numbers: (new tree, 'a op b = c')."""
  op, left, right = node
  if isinstance(left, int) and isinstance(right, int):
    value = _apply(op, left, right)
    return value, f"{_render(left)} {op} {_render(right)} = {value}"
  if not isinstance(left, int):
    left, step = _reduce_once(left)
  else:
    right, step = _reduce_once(right)
  return (op, left, right), step


def _arithmetic(difficulty: int, rng: np.random.Generator):
  num_ops = difficulty + 1
  high = (9, 20, 50, 99, 999)[difficulty - 1]
  ops = ("+", "-") if difficulty == 1 else ("+", "-", "*")

  def build(n):  # a random tree with n operations; products get small operands to keep numbers readable
    if n == 0:
      return _int(rng, 1, high)
    op = ops[int(rng.integers(len(ops)))]
    n_left = _int(rng, 0, n - 1)
    if op == "*":
      return (op, build(n_left) if n_left else _int(rng, 2, 12), build(n - 1 - n_left) if n - 1 - n_left
              else _int(rng, 2, 12))
    return (op, build(n_left), build(n - 1 - n_left))

  tree = build(num_ops)
  problem = f"Compute {_render(tree)}."
  steps = []
  while not isinstance(tree, int):
    tree, step = _reduce_once(tree)
    steps.append(step + ("." if isinstance(tree, int) else f", so the expression becomes {_render(tree)}."))
  return problem, steps, str(tree)


def _signed(value: int) -> str:
  """'+ 3' / '- 3', for writing 'a x + b' without '+ -3'."""
  return f"+ {value}" if value >= 0 else f"- {-value}"


def _coef(a: int) -> str:
  """Coefficient as written before a variable: 1 -> '', -1 -> '-', 3 -> '3'."""
  return {1: "", -1: "-"}.get(a, str(a))


def _move(term: str, value: int) -> str:
  """The step that removes `value * term` from the left side, worded without double negatives."""
  return f"Subtract {value}{term} from both sides" if value >= 0 else f"Add {-value}{term} to both sides"


def _linear(difficulty: int, rng: np.random.Generator):
  high = (10, 12, 15, 20, 12)[difficulty - 1]
  x = _int(rng, -high, high)
  if difficulty == 5:  # a 2x2 system with a unique integer solution
    y = _int(rng, -high, high)
    while True:
      a, b, c, d = (_int(rng, 1, 9) * (1 if rng.random() < 0.7 else -1) for _ in range(4))
      if a * d - b * c != 0 and a != 0 and c != 0:
        break
    e, f = a * x + b * y, c * x + d * y
    problem = (f"Solve the system {_coef(a)}x {_signed(b)[0]} {_coef(abs(b))}y = {e} and "
               f"{_coef(c)}x {_signed(d)[0]} {_coef(abs(d))}y = {f}. "
               "Give the answer as (x, y).")
    det = a * d - b * c
    steps = [f"Multiply the first equation by {d} and the second by {b}, then subtract to eliminate y: "
             f"({a}*({d}) - ({b})*({c}))x = ({e})*({d}) - ({f})*({b}), that is {det}x = {e * d - f * b}.",
             f"So x = {e * d - f * b} / {det} = {x}.",
             f"Substitute into the first equation: {_coef(b)}y = {e} - ({a * x}) = {e - a * x}, so y = {y}."]
    return problem, steps, f"({x}, {y})"
  a = 1 if difficulty == 1 else _int(rng, 2, 9) * (1 if difficulty < 3 or rng.random() < 0.7 else -1)
  b = _int(rng, -high, high)
  if difficulty <= 2:
    rhs = a * x + b
    problem = f"Solve for x: {_coef(a)}x {_signed(b)} = {rhs}."
    steps = [f"{_move('', b)}: {_coef(a)}x = {rhs - b}."]
    if a != 1:
      steps.append(f"Divide both sides by {a}: x = {rhs - b} / {a} = {x}.")
    return problem, steps, str(x)
  c = _int(rng, -9, 9)
  while c == a:
    c = _int(rng, -9, 9)
  if difficulty == 3:
    e = (a - c) * x + b
    problem = f"Solve for x: {_coef(a)}x {_signed(b)} = {_coef(c)}x {_signed(e)}."
  else:  # difficulty 4: a(x + k) on the left needs expanding first
    k = _int(rng, -high, high)
    b = a * k
    e = (a - c) * x + b
    problem = f"Solve for x: {a}(x {_signed(k)}) = {_coef(c)}x {_signed(e)}."
  steps = [] if difficulty == 3 else [f"Expand the left side: {a}(x {_signed(k)}) = {_coef(a)}x {_signed(b)}."]
  steps += [f"{_move('x', c)}: {_coef(a - c)}x {_signed(b)} = {e}.",
            f"{_move('', b)}: {_coef(a - c)}x = {e - b}."]
  if a - c != 1:
    steps.append(f"Divide both sides by {a - c}: x = {x}.")
  return problem, steps, str(x)


@functools.lru_cache(maxsize=None)
def _primes(low: int, high: int) -> tuple[int, ...]:
  return tuple(n for n in range(max(low, 2), high + 1) if all(n % d for d in range(2, int(n ** 0.5) + 1)))


def _prime(rng: np.random.Generator, low: int, high: int) -> int:
  """A uniform prime in [low, high]."""
  primes = _primes(low, high)
  return primes[int(rng.integers(len(primes)))]


def _modular(difficulty: int, rng: np.random.Generator):
  # Prime moduli, and product terms that are not multiples of the modulus: a product (or power) is then never
  # 0 by accident. With composite moduli ~29% of the difficulty-2 answers were 0, a guess RL learned to make.
  m = _prime(rng, *((5, 13), (7, 31), (7, 31), (11, 101), (101, 997))[difficulty - 1])
  if difficulty <= 2:
    terms = []
    while len(terms) < difficulty + 1:
      t = _int(rng, 10, 99 * difficulty)
      if difficulty == 1 or t % m:
        terms.append(t)
    op, name = ("+", "sum") if difficulty == 1 else ("*", "product")
    problem = f"What is ({f' {op} '.join(map(str, terms))}) mod {m}?"
    steps, acc = [], terms[0] % m
    steps.append(f"Reduce each term mod {m}: " + ", ".join(f"{t} = {t % m}" for t in terms) + ".")
    for t in terms[1:]:
      new = (acc + t) % m if op == "+" else (acc * t) % m
      steps.append(f"Running {name}: {acc} {op} {t % m} = {acc + t % m if op == '+' else acc * (t % m)}, "
                   f"which is {new} mod {m}.")
      acc = new
    return problem, steps, str(acc)
  base = _int(rng, 2, m - 1)
  k = _int(rng, *((3, 6), (10, 60), (100, 9999))[difficulty - 3])
  problem = f"What is {base}^{k} mod {m}?"
  if difficulty == 3:  # repeated multiplication
    steps, acc = [], base
    for j in range(2, k + 1):
      steps.append(f"{base}^{j} = {acc} * {base} = {acc * base}, which is {acc * base % m} mod {m}.")
      acc = acc * base % m
    return problem, steps, str(acc)
  # Square-and-multiply over the binary expansion of k.
  bits = bin(k)[2:]
  steps = [f"Write {k} in binary: {bits}. Square repeatedly and multiply in the powers for the 1 bits."]
  squares, p, power = [], base % m, 1
  for j in range(len(bits)):
    squares.append(p)
    steps.append(f"{base}^{power} = {p} mod {m}." if j == 0 else
                 f"{base}^{power} = {squares[j - 1]}^2 = {squares[j - 1] ** 2}, which is {p} mod {m}.")
    p, power = p * p % m, power * 2
  acc = 1
  for j, bit in enumerate(reversed(bits)):
    if bit == "1":
      steps.append(f"Multiply in {base}^{2 ** j}: {acc} * {squares[j]} = {acc * squares[j]}, "
                   f"which is {acc * squares[j] % m} mod {m}.")
      acc = acc * squares[j] % m
  return problem, steps, str(acc)


_NAMES = ("Ada", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hugo", "Iris", "Jonas", "Kira", "Liam",
          "Mia", "Noor", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tariq", "Uma", "Vera", "Wes", "Yuki",
          "Zane")
_ITEMS = (("notebook", 3, 9), ("pen", 1, 4), ("apple", 1, 3), ("book", 8, 25), ("ticket", 5, 15),
          ("candle", 2, 7), ("plant", 4, 12), ("scarf", 6, 20))


def _plural(word: str, count: int) -> str:
  return word if count == 1 else word + "s"


def _word(difficulty: int, rng: np.random.Generator):
  name = _NAMES[int(rng.integers(len(_NAMES)))]
  kind = int(rng.integers(3))
  if kind == 0:  # shopping: costs, total, change
    picks = rng.choice(len(_ITEMS), size=min(difficulty, 4), replace=False)
    lines, steps, costs = [], [], []
    for i in picks:
      item, low, high = _ITEMS[int(i)]
      qty, price = _int(rng, 1, 2 + 2 * difficulty), _int(rng, low, high)
      lines.append(f"{qty} {_plural(item, qty)} at {price} {_plural('dollar', price)} each")
      steps.append(f"The {_plural(item, 2)} cost {qty} * {price} = {qty * price} dollars.")
      costs.append(qty * price)
    total = sum(costs)
    bill = next(b for b in (10, 20, 50, 100, 200, 500, 1000) if b > total)
    problem = (f"{name} buys {', '.join(lines[:-1]) + ' and ' if len(lines) > 1 else ''}{lines[-1]}. "
               f"{name} pays with a {bill} dollar bill. How many dollars of change does {name} get?")
    if len(picks) > 1:
      steps.append(f"The total is {' + '.join(map(str, costs))} = {total} dollars.")
    steps.append(f"The change is {bill} - {total} = {bill - total} dollars.")
    return problem, steps, str(bill - total)
  if kind == 1:  # travel: distance over legs at constant speeds
    legs = [(_int(rng, 3, 12) * 5, _int(rng, 1, 2 + difficulty)) for _ in range(difficulty)]
    parts = [f"at {s} km/h for {t} {_plural('hour', t)}" for s, t in legs]
    problem = (f"{name} drives {', then '.join(parts)}. How many kilometres does {name} drive in total?")
    steps = [f"Leg {j + 1}: {s} * {t} = {s * t} km." for j, (s, t) in enumerate(legs)]
    total = sum(s * t for s, t in legs)
    if len(legs) > 1:
      steps.append(f"Total: {' + '.join(str(s * t) for s, t in legs)} = {total} km.")
    return problem, steps, str(total)
  # savings: start, weekly saving, purchases
  start, weekly = _int(rng, 0, 50 * difficulty), _int(rng, 2, 10 * difficulty)
  weeks = _int(rng, 2, 4 * difficulty)
  spends = [_int(rng, 1, 10 * difficulty) for _ in range(difficulty - 1)]
  problem = (f"{name} has {start} dollars and saves {weekly} dollars every week for {weeks} weeks"
             + "".join(f", then spends {s} dollars" for s in spends)
             + f". How many dollars does {name} have at the end?")
  saved = weekly * weeks
  steps = [f"Savings: {weekly} * {weeks} = {saved} dollars.",
           f"After saving: {start} + {saved} = {start + saved} dollars."]
  acc = start + saved
  for s in spends:
    steps.append(f"After spending {s}: {acc} - {s} = {acc - s} dollars.")
    acc -= s
  return problem, steps, str(acc)


_PLACE_PARTS = ("Ash", "Bel", "Cor", "Dun", "Elm", "Fen", "Glen", "Hol", "Ive", "Kes", "Lin", "Mor", "Nor",
                "Oak", "Pen", "Rav", "Sel", "Thorn", "Wyn")
_PLACE_ENDS = ("ford", "holm", "wick", "mere", "stead", "by", "ton", "vale")
_JOBS = ("baker", "smith", "weaver", "miller", "potter", "teacher", "healer", "carpenter", "fisher")
_ANIMALS = ("goats", "sheep", "hens", "ducks", "cows", "bees", "geese")
_COLOURS = ("red", "blue", "green", "yellow", "white", "grey")


def _general(difficulty: int, rng: np.random.Generator):
  place = _PLACE_PARTS[int(rng.integers(len(_PLACE_PARTS)))] + _PLACE_ENDS[int(rng.integers(len(_PLACE_ENDS)))]
  n = difficulty + 2  # people described; the others are distractors for the question
  people = [_NAMES[int(i)] for i in rng.choice(len(_NAMES), size=n, replace=False)]
  jobs = [_JOBS[int(i)] for i in rng.choice(len(_JOBS), size=n, replace=False)]
  animals = [_ANIMALS[int(rng.integers(len(_ANIMALS)))] for _ in range(n)]
  counts = [_int(rng, 2, 40) for _ in range(n)]
  colours = [_COLOURS[int(rng.integers(len(_COLOURS)))] for _ in range(n)]
  facts = [f"{p} works as the {j} of {place}, lives in the {c} house and keeps {k} {a}."
           for p, j, c, k, a in zip(people, jobs, colours, counts, animals)]
  intro = f"{place} is a small village by a river. Its market opens every morning."
  t = int(rng.integers(n))
  kind = int(rng.integers(3)) if difficulty > 1 else 0
  if kind == 0:
    question = f"Who is the {jobs[t]} of {place}?"
    steps, answer = [f"The text says {facts[t][:-1]}."], people[t]
  elif kind == 1:
    question = f"How many {animals[t]} does the {jobs[t]} keep?"
    steps = [f"The {jobs[t]} is {people[t]}.", f"{people[t]} keeps {counts[t]} {animals[t]}."]
    answer = str(counts[t])
  else:
    question = f"How many animals do the people of {place} keep in total?"
    steps = [f"Add the animals: {' + '.join(map(str, counts))} = {sum(counts)}."]
    answer = str(sum(counts))
  return f"{intro} {' '.join(facts)} {question}", steps, answer


_GENERATORS = {"arithmetic": _arithmetic, "linear": _linear, "modular": _modular, "word": _word,
               "general": _general}


# ---------------------------------------------------------------------------------------------------------
# Public API.


def _check_family_difficulty(family: str, difficulty: int) -> None:
  if family not in _GENERATORS:
    raise CorpusError(f"unknown problem family {family!r}; known: {FAMILIES}")
  if difficulty not in DIFFICULTIES:
    raise CorpusError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")


def generate_problem(family: str, difficulty: int, rng: np.random.Generator) -> dict:
  """One problem drawn with `rng`: {"family", "difficulty", "problem", "solution", "answer"}.

  `solution` is the numbered steps followed by "The answer is \\boxed{answer}."
  """
  _check_family_difficulty(family, difficulty)
  problem, steps, answer = _GENERATORS[family](difficulty, rng)
  solution = "\n".join(steps + [f"The answer is \\boxed{{{answer}}}."])
  return {"family": family, "difficulty": difficulty, "problem": problem, "solution": solution,
          "answer": answer}


def split_of(problem: str, heldout_fraction: float = DEFAULT_HELDOUT_FRACTION) -> str:
  """"heldout" for a `heldout_fraction` of problem texts, chosen by a hash of the text, else "train"."""
  bucket = int.from_bytes(hashlib.sha256(problem.encode("utf-8")).digest()[:8], "big") / 2.0 ** 64
  return "heldout" if bucket < heldout_fraction else "train"


def make_record(family: str, difficulty: int, seed: int, index: int, split: str = "train",
                heldout_fraction: float = DEFAULT_HELDOUT_FRACTION) -> dict:
  """The deterministic record for (family, difficulty, seed, index) in `split`.

  Returns {"id", "family", "difficulty", "problem", "solution", "answer"}; `id` is
  "family/difficulty/split/seed/index".
  """
  _check_family_difficulty(family, difficulty)
  if split not in SPLITS:
    raise CorpusError(f"split must be one of {SPLITS}, got {split!r}")
  if not 0.0 < heldout_fraction < 1.0:
    raise CorpusError(f"heldout_fraction must be in (0, 1) so both splits exist, got {heldout_fraction}")
  if seed < 0 or index < 0:
    raise CorpusError(f"seed and index must be non-negative, got seed={seed}, index={index}")
  family_key = zlib.crc32(family.encode())  # stable across processes, unlike hash()
  for attempt in range(_MAX_ATTEMPTS):
    rng = np.random.default_rng([seed, family_key, difficulty, index, attempt])
    record = generate_problem(family, difficulty, rng)
    if split_of(record["problem"], heldout_fraction) == split:
      return {"id": f"{family}/{difficulty}/{split}/{seed}/{index}", **record}
  raise CorpusError(f"no {split} problem for {family} difficulty {difficulty} in {_MAX_ATTEMPTS} draws "
                    f"(heldout_fraction={heldout_fraction})")


def format_record(record: dict) -> str:
  """Pretraining text of a record: the problem, then the worked solution."""
  return f"Problem: {record['problem']}\nSolution: {record['solution']}"


def extract_boxed(text: str) -> str | None:
  """Contents of the last `\\boxed{...}` in `text` (nested braces allowed), or None if there is none."""
  start = text.rfind("\\boxed{")
  while start != -1:
    depth = 0
    for i in range(start + len("\\boxed"), len(text)):
      depth += {"{": 1, "}": -1}.get(text[i], 0)
      if depth == 0:
        return text[start + len("\\boxed{"):i]
    start = text.rfind("\\boxed{", 0, start)  # unbalanced (e.g. cut off): fall back to the previous one
  return None


_NUMBER = re.compile(r"^-?\d+(\.\d+)?(/\d+)?$")


def normalize_answer(answer: str) -> str:
  """Canonical form for comparison: no spaces, `$` or trailing period; numbers as reduced fractions."""
  s = answer.strip().replace(" ", "").replace("$", "").rstrip(".")
  s = re.sub(r"^\\text\{(.*)\}$", r"\1", s)
  if _NUMBER.match(s):
    try:
      return str(Fraction(s))
    except ZeroDivisionError:
      return s
  return s.lower()


def check_answer(record: dict, text: str) -> bool:
  """Whether the last `\\boxed{...}` in `text` equals `record["answer"]` (after `normalize_answer`)."""
  if "answer" not in record:
    raise CorpusError(f"record {record.get('id', '?')!r} has no 'answer' field")
  boxed = extract_boxed(text)
  return boxed is not None and normalize_answer(boxed) == normalize_answer(record["answer"])
