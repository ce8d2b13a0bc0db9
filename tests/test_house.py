"""The shape of the repository a reader walks into: modules and functions of a readable size, docs in the present
tense, one CSV per study."""
import ast
import os
import re
import subprocess

import pytest

from conftest import ROOT

MAX_MODULE_LINES, MAX_FUNCTION_LINES = 700, 60


def _tracked(pattern):
    out = subprocess.run(["git", "ls-files", pattern], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return out.stdout.split()


def test_no_module_over_700_lines_and_no_function_over_60_outside_tests():
    too_long = []
    for path in _tracked("*.py"):
        if path.startswith("tests/"):
            continue
        with open(os.path.join(ROOT, path)) as f:
            source = f.read()
        if source.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{path}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{path}:{node.lineno} {node.name}: {lines} lines")
    assert not too_long, too_long


def test_the_tree_tells_no_history():
    """How the project got here belongs in git log: no session or issue numbers, no word-for-word moves."""
    pattern = re.compile(r"[Ss]ession [0-9]|[Ii]ssue [0-9]|" + "verb" + "atim")  # spelled so as not to match itself
    hits = []
    for path in _tracked("*"):
        if path.startswith("tests/fixtures/") or path.endswith((".png", ".npz", ".csv")):
            continue
        with open(os.path.join(ROOT, path), errors="replace") as f:
            hits += [f"{path}:{i}" for i, line in enumerate(f, 1) if pattern.search(line)]
    assert not hits, hits


def test_one_csv_per_study():
    """Each CSV under docs/ holds one study's raw runs in long format and is read by a docs page; a study never
    spreads over several files (no dcgan_gap_*.csv beside dcgan_gap.csv)."""
    csvs = [os.path.basename(p) for p in _tracked("docs/*") if p.endswith(".csv")]
    text = "".join(open(os.path.join(ROOT, p)).read() for p in _tracked("docs/*.md"))
    assert csvs and all(name in text for name in csvs), csvs
    stems = [name[:-4] for name in csvs]
    assert not [a for a in stems for b in stems if a != b and a.startswith(b + "_")], csvs
