"""YAML shape limits: a hostile or broken config is a file:line: key: message problem, never a traceback.

PyYAML composes recursively and shares aliased nodes, so an alias cycle, a
billion-laughs bomb or 5,000 nested brackets used to end in a RecursionError
(``canopy validate`` exit 1, which ``RestartPreventExitStatus=2`` does not
stop) or a validator that never finishes.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.yamlsrc import LIMITS, ConfigError, Limits, load_yaml
from tests.support import ROOT

BOMB = "".join(
    f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}" if i else '"lol"'] * 9) + "]\n" for i in range(9)
)

HOSTILE = {
    "alias cycle": ("a: &x [*x]\n", 1, "a[0]", "alias *x is used inside its own anchor &x (a cycle)"),
    "merge cycle": ("base: &x\n  k: 1\n  <<: *x\n", 3, "base.<<", "alias *x is used inside its own anchor &x"),
    "billion laughs": (BOMB, 6, "l5[0]", "more than 100,000 values, counting each use of an alias (alias *l4 adds 66,430)"),
    "5,000 nested brackets": ("a: " + "[" * 5000 + "]" * 5000 + "\n", 1, "a[0][0][0][0][0]…", "nested deeper than 64 levels"),
    "deep block nesting": ("".join("  " * i + f"k{i}:\n" for i in range(100)) + "  " * 100 + "v\n", 65,
                           "k0.k1.k2.k3.k4.k5…", "nested deeper than 64 levels"),
    "alias chain deeper than the limit": ("".join(f"l{i}: &l{i} [{f'*l{i - 1}' if i else 1}]\n" for i in range(80)), 64,
                                          "l63[0]", "alias *l62 nests deeper than 64 levels"),
}


def write(tmp_path: Path, text: str, name: str = "site.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("text,line,key,words", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_shapes_are_one_problem_at_their_line_and_key(tmp_path, text, line, key, words):
    path = write(tmp_path, text)
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as exc:
        load_yaml(path)
    assert time.monotonic() - t0 < 5, "a limit must stop the work, not just report it afterwards"
    (problem,) = exc.value.problems
    assert (problem.line, problem.key) == (line, key), str(problem)
    assert words in problem.message, str(problem)
    assert str(problem).startswith(f"{path}:{line}: {key}: ")


@pytest.mark.parametrize("name", ["alias cycle", "billion laughs", "5,000 nested brackets"])
def test_validate_exits_2_with_file_line_not_a_traceback(tmp_path, name):
    text, line, key, words = HOSTILE[name]
    path = write(tmp_path, text)
    proc = subprocess.run([sys.executable, "-m", "gateway", "validate", str(path)], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"{path}:{line}: {key}: " in proc.stderr and words in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path):
    path = write(tmp_path, "a: 1\n" + "# padding\n" * 120_000)
    assert path.stat().st_size > LIMITS.max_bytes
    with pytest.raises(ConfigError) as exc:
        load_yaml(path)
    (problem,) = exc.value.problems
    assert problem.line is None and "larger than 1,048,576 bytes" in problem.message


def test_the_stated_limits():
    assert (LIMITS.max_bytes, LIMITS.max_depth, LIMITS.max_values) == (1024 * 1024, 64, 100_000)


def test_anchors_merges_and_repeated_aliases_within_the_limits_still_load(tmp_path):
    path = write(tmp_path, """\
defaults: &d {poll_interval: 5, timeout: 0.5}
probe: &p [1, 2, 3]
a: {<<: *d, unit: 1, regs: *p}
b: {<<: *d, unit: 2, regs: *p}
nested: [[[[[[[[[[1]]]]]]]]]]
""")
    src = load_yaml(path)
    assert src.data["a"] == {"unit": 1, "regs": [1, 2, 3], "poll_interval": 5, "timeout": 0.5}
    assert src.data["b"]["regs"] == [1, 2, 3]
    assert src.line_of(("b", "unit")) == 4


def test_limits_count_expanded_values_and_depth_exactly(tmp_path):
    # the root, 2 keys, x and its 3 items, y, and x with its 3 items twice more: 16 values (keys count), 3 levels
    path = write(tmp_path, "x: &x [1, 2, 3]\ny: [*x, *x]\n")
    assert load_yaml(path, Limits(max_values=16, max_depth=3)).data["y"] == [[1, 2, 3], [1, 2, 3]]
    with pytest.raises(ConfigError, match="y\\[1\\]: more than 15 values"):
        load_yaml(path, Limits(max_values=15))
    with pytest.raises(ConfigError, match="y\\[0\\]: alias \\*x nests deeper than 2 levels"):
        load_yaml(path, Limits(max_depth=2))


def test_env_references_are_remembered_for_the_security_review(tmp_path, monkeypatch):
    monkeypatch.setenv("CANOPY_TEST_PW", "s3cret")
    path = write(tmp_path, "broker:\n  password: ${CANOPY_TEST_PW}\n  username: gw-1\n")
    src = load_yaml(path)
    assert src.data["broker"]["password"] == "s3cret"
    assert src.from_env == {("broker", "password")}
