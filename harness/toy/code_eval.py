"""toy://code-eval: 30 small Python function tasks with tests, for the `code` suite.

Written for harness.  Each task has a signature, a one-line description, a
reference solution (``canonical_solution``, used only by the tests of this
data) and assertions.  Rows follow the HumanEval layout: ``tests`` defines
``check(candidate)`` and ``entry_point`` names the function to pass to it.
"""

from __future__ import annotations

import random

# (entry_point, signature, description, reference solution, assertions on `candidate`)
TASKS = [
    ("add", "add(a, b)", "returns the sum of two integers",
     "def add(a, b):\n    return a + b\n",
     ["candidate(2, 3) == 5", "candidate(-4, 4) == 0", "candidate(0, 0) == 0"]),
    ("is_even", "is_even(n)", "returns True when the integer n is even, else False",
     "def is_even(n):\n    return n % 2 == 0\n",
     ["candidate(4) is True", "candidate(7) is False", "candidate(0) is True", "candidate(-3) is False"]),
    ("reverse_string", "reverse_string(s)", "returns the string s reversed",
     "def reverse_string(s):\n    return s[::-1]\n",
     ["candidate('abc') == 'cba'", "candidate('') == ''", "candidate('a') == 'a'"]),
    ("count_vowels", "count_vowels(s)", "returns how many characters of s are vowels (aeiou, either case)",
     "def count_vowels(s):\n    return sum(ch in 'aeiouAEIOU' for ch in s)\n",
     ["candidate('hello') == 2", "candidate('AEIOU') == 5", "candidate('xyz') == 0", "candidate('') == 0"]),
    ("factorial", "factorial(n)", "returns n! for an integer n >= 0",
     "def factorial(n):\n    out = 1\n    for i in range(2, n + 1):\n        out *= i\n    return out\n",
     ["candidate(0) == 1", "candidate(1) == 1", "candidate(5) == 120", "candidate(10) == 3628800"]),
    ("fibonacci", "fibonacci(n)", "returns the n-th Fibonacci number, with fibonacci(0) = 0 and fibonacci(1) = 1",
     "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
     ["candidate(0) == 0", "candidate(1) == 1", "candidate(2) == 1", "candidate(10) == 55",
      "candidate(30) == 832040"]),
    ("is_prime", "is_prime(n)", "returns True when the integer n is a prime number",
     ("def is_prime(n):\n    if n < 2:\n        return False\n    i = 2\n    while i * i <= n:\n"
     "        if n % i == 0:\n            return False\n        i += 1\n    return True\n"),
     ["candidate(2) is True", "candidate(1) is False", "candidate(0) is False", "candidate(17) is True",
      "candidate(21) is False", "candidate(97) is True"]),
    ("max_of_list", "max_of_list(xs)", "returns the largest element of a non-empty list of numbers",
     ("def max_of_list(xs):\n    best = xs[0]\n    for x in xs:\n        best = x if x > best else best\n"
     "    return best\n"),
     ["candidate([1, 5, 3]) == 5", "candidate([-2, -7]) == -2", "candidate([4]) == 4"]),
    ("sum_digits", "sum_digits(n)", "returns the sum of the decimal digits of the integer n (sign ignored)",
     "def sum_digits(n):\n    return sum(int(d) for d in str(abs(n)))\n",
     ["candidate(123) == 6", "candidate(0) == 0", "candidate(-45) == 9", "candidate(9999) == 36"]),
    ("is_palindrome", "is_palindrome(s)", "returns True when s reads the same backwards, ignoring case",
     "def is_palindrome(s):\n    t = s.lower()\n    return t == t[::-1]\n",
     ["candidate('Level') is True", "candidate('abc') is False", "candidate('') is True",
      "candidate('Noon') is True"]),
    ("gcd", "gcd(a, b)", "returns the greatest common divisor of two non-negative integers, not both zero",
     "def gcd(a, b):\n    while b:\n        a, b = b, a % b\n    return a\n",
     ["candidate(12, 18) == 6", "candidate(7, 5) == 1", "candidate(0, 9) == 9", "candidate(100, 10) == 10"]),
    ("flatten", "flatten(xss)", "returns one list with the elements of a list of lists, in order",
     "def flatten(xss):\n    return [x for xs in xss for x in xs]\n",
     ["candidate([[1, 2], [3]]) == [1, 2, 3]", "candidate([]) == []", "candidate([[], [4], []]) == [4]"]),
    ("unique_sorted", "unique_sorted(xs)", "returns the distinct elements of xs in increasing order",
     "def unique_sorted(xs):\n    return sorted(set(xs))\n",
     ["candidate([3, 1, 3, 2]) == [1, 2, 3]", "candidate([]) == []", "candidate([5, 5]) == [5]"]),
    ("word_count", "word_count(s)", "returns the number of whitespace-separated words in s",
     "def word_count(s):\n    return len(s.split())\n",
     ["candidate('a b c') == 3", "candidate('') == 0", "candidate('  one   two ') == 2"]),
    ("capitalize_words", "capitalize_words(s)",
     "returns s with the first letter of every space-separated word upper-cased and the rest unchanged",
     "def capitalize_words(s):\n    return ' '.join(w[:1].upper() + w[1:] for w in s.split(' '))\n",
     ["candidate('hello world') == 'Hello World'", "candidate('a') == 'A'", "candidate('') == ''",
      "candidate('iPhone case') == 'IPhone Case'"]),
    ("celsius_to_fahrenheit", "celsius_to_fahrenheit(c)", "converts degrees Celsius to Fahrenheit",
     "def celsius_to_fahrenheit(c):\n    return c * 9 / 5 + 32\n",
     ["candidate(0) == 32", "candidate(100) == 212", "abs(candidate(-40) - (-40)) < 1e-9",
      "abs(candidate(37) - 98.6) < 1e-9"]),
    ("running_sum", "running_sum(xs)", "returns the list of prefix sums of xs",
     ("def running_sum(xs):\n    out, total = [], 0\n    for x in xs:\n        total += x\n"
     "        out.append(total)\n    return out\n"),
     ["candidate([1, 2, 3]) == [1, 3, 6]", "candidate([]) == []", "candidate([5, -5]) == [5, 0]"]),
    ("count_char", "count_char(s, ch)", "returns how many times the character ch occurs in s",
     "def count_char(s, ch):\n    return s.count(ch)\n",
     ["candidate('banana', 'a') == 3", "candidate('', 'x') == 0", "candidate('aaa', 'b') == 0"]),
    ("second_largest", "second_largest(xs)",
     "returns the second largest distinct value of a list with at least two distinct numbers",
     "def second_largest(xs):\n    return sorted(set(xs))[-2]\n",
     ["candidate([1, 2, 3]) == 2", "candidate([5, 5, 4]) == 4", "candidate([-1, -2]) == -2"]),
    ("merge_sorted", "merge_sorted(a, b)", "merges two increasing lists into one increasing list",
     "def merge_sorted(a, b):\n    return sorted(a + b)\n",
     ["candidate([1, 3], [2, 4]) == [1, 2, 3, 4]", "candidate([], [1]) == [1]",
      "candidate([1, 1], [1]) == [1, 1, 1]"]),
    ("binary_string", "binary_string(n)", "returns the binary representation of n >= 0 without a prefix",
     "def binary_string(n):\n    return format(n, 'b')\n",
     ["candidate(0) == '0'", "candidate(5) == '101'", "candidate(255) == '11111111'"]),
    ("is_anagram", "is_anagram(a, b)", "returns True when a and b contain the same letters the same number of times",
     "def is_anagram(a, b):\n    return sorted(a) == sorted(b)\n",
     ["candidate('listen', 'silent') is True", "candidate('ab', 'abb') is False", "candidate('', '') is True"]),
    ("chunk", "chunk(xs, size)", "splits xs into consecutive lists of length size (the last may be shorter)",
     "def chunk(xs, size):\n    return [xs[i:i + size] for i in range(0, len(xs), size)]\n",
     ["candidate([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]", "candidate([], 3) == []",
      "candidate([1, 2], 5) == [[1, 2]]"]),
    ("char_frequency", "char_frequency(s)", "returns a dict mapping each character of s to its count",
     ("def char_frequency(s):\n    out = {}\n    for ch in s:\n        out[ch] = out.get(ch, 0) + 1\n"
     "    return out\n"),
     ["candidate('aab') == {'a': 2, 'b': 1}", "candidate('') == {}"]),
    ("remove_duplicates", "remove_duplicates(xs)", "returns xs without repeated elements, keeping first occurrences in order",
     ("def remove_duplicates(xs):\n    seen, out = set(), []\n    for x in xs:\n        if x not in seen:\n"
     "            seen.add(x)\n            out.append(x)\n    return out\n"),
     ["candidate([3, 1, 3, 2, 1]) == [3, 1, 2]", "candidate([]) == []", "candidate([7, 7, 7]) == [7]"]),
    ("power_of_two", "power_of_two(n)", "returns True when the integer n is a positive power of two",
     "def power_of_two(n):\n    return n > 0 and n & (n - 1) == 0\n",
     ["candidate(1) is True", "candidate(64) is True", "candidate(0) is False", "candidate(12) is False",
      "candidate(-8) is False"]),
    ("digits_reversed", "digits_reversed(n)", "returns the integer whose digits are those of n >= 0 in reverse order",
     "def digits_reversed(n):\n    return int(str(n)[::-1])\n",
     ["candidate(123) == 321", "candidate(120) == 21", "candidate(7) == 7", "candidate(0) == 0"]),
    ("list_product", "list_product(xs)", "returns the product of the numbers in xs (1 for an empty list)",
     "def list_product(xs):\n    out = 1\n    for x in xs:\n        out *= x\n    return out\n",
     ["candidate([2, 3, 4]) == 24", "candidate([]) == 1", "candidate([5, 0]) == 0"]),
    ("longest_word", "longest_word(s)", "returns the longest space-separated word of s (the first one on ties)",
     ("def longest_word(s):\n    best = ''\n    for w in s.split():\n        if len(w) > len(best):\n"
     "            best = w\n    return best\n"),
     ["candidate('a quick brown fox') == 'quick'", "candidate('hi yo') == 'hi'", "candidate('') == ''"]),
    ("clamp", "clamp(x, lo, hi)", "returns x limited to the interval [lo, hi]",
     "def clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n",
     ["candidate(5, 0, 10) == 5", "candidate(-3, 0, 10) == 0", "candidate(42, 0, 10) == 10",
      "candidate(0, 0, 0) == 0"]),
]


def _tests(assertions: list[str]) -> str:
    body = "\n".join(f"    assert {a}, {a!r}" for a in assertions)
    return f"def check(candidate):\n{body}\n"


def code_eval_rows(seed: int = 0) -> list[dict]:
    """The rows of toy://code-eval: seed 0 in task order, other seeds a seeded order of the same rows."""
    rows = []
    for i, (entry, signature, description, solution, assertions) in enumerate(TASKS):
        question = (f"Write a Python function `{signature}` that {description}. "
                    f"Reply with the complete function in a ```python code block.")
        rows.append({"id": f"code-{i:03d}", "prompt": [{"role": "user", "content": question}],
                     "tests": _tests(assertions), "entry_point": entry, "canonical_solution": solution})
    if seed:
        random.Random(f"code-eval:{seed}").shuffle(rows)
    return rows
