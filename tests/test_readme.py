"""The README's examples cannot go stale: this test runs or checks every one of them.

- Every ```python block is executed (in the repository root, each block in a fresh namespace).
- Every shell command line that runs ``python pipelines/X.py ...`` (in a ```bash block or inline in
  the text) names a program that exists, and its flags parse with that program's own absl flag
  definitions (``--flagfile=`` expanded): the module is imported in a subprocess and its FlagValues
  parse the line. No job runs. Files of the repository named on the line (or in its flagfiles)
  exist, and so do the ``make`` targets named in the README.
- Every file the README cites (a relative link, or a path under one of the repository's folders in
  backticks) exists, and every ``rnl_keras.x.y`` name it cites imports.
The checker itself is tested on lines that must fail (an unknown flag, a bad value, a missing
required flag, a missing program, flagfile or file).
"""
from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
# Folders of the repository: a path under one of these, cited by the README, must exist.
REPO_DIRS = ("bench/", "configs/", "docs/", "pipelines/", "rnl_keras/", "tests/")
HELP_FLAGS = ("--help", "--helpfull", "--helpshort")

# Runs in a subprocess: import one program (not as __main__: nothing runs), then parse each argv
# with the FlagValues the program parses with (its module-level FLAGS, else absl's global one).
_PARSER = r"""
import importlib.util, json, sys
from absl import flags
program, lines = sys.argv[1], json.loads(sys.argv[2])
sys.path.insert(0, ".")
spec = importlib.util.spec_from_file_location("_readme_program", program)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
values = getattr(module, "FLAGS", None)
if not isinstance(values, flags.FlagValues):
    values = flags.FLAGS


def failed_validators():
    # Validators run one by one. One that checks the user's files ("does --list_file exist?")
    # cannot pass on a README's placeholder names: only its message is looked at, and passed over.
    failures = []
    validators = {v for name in values for v in values[name].validators}
    for validator in sorted(validators, key=lambda v: v.insertion_index):
        try:
            validator.verify(values)
        except flags.ValidationError as err:
            if "exist" not in str(err):
                failures.append(f"IllegalFlagValueError: {err}")
    return failures


results = []
for argv in lines:
    values.unparse_flags()
    expanded = [program] + argv
    try:
        expanded = values.read_flags_from_files([program] + argv)
        values([program] + argv)
        results.append({"error": None, "expanded": expanded[1:]})
    except Exception as err:  # any parse or validation error is the answer for this line
        failures = failed_validators() if values.is_parsed() else [f"{type(err).__name__}: {err}"]
        results.append({"error": "; ".join(failures) or None, "expanded": expanded[1:]})
print("RESULTS=" + json.dumps({"lines": results, "flags": sorted(values)}))
"""


# ---------------------------------------------------------------------------------- extraction
def code_blocks(text: str) -> list[tuple[str, int, str]]:
    """``(language, first line number, code)`` of every fenced block of ``text``."""
    blocks = []
    for m in re.finditer(r"^```(\w*)[ \t]*\n(.*?)^```", text, re.S | re.M):
        blocks.append((m.group(1), text[:m.start()].count("\n") + 2, m.group(2)))
    return blocks


def _shell_lines(code: str, first_line: int) -> list[tuple[int, str]]:
    """Logical lines of a shell block (backslash continuations joined), with line numbers."""
    out, pending, start = [], "", first_line
    for offset, line in enumerate(code.splitlines()):
        if not pending:
            start = first_line + offset
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    if pending:
        out.append((start, pending))
    return out


def _words(line: str) -> list[str]:
    """Shell words of ``line``, comments dropped; ``...`` (an elided part) is left out."""
    return [w for w in shlex.split(line, comments=True) if w != "..."]


def command_lines(text: str) -> list[tuple[str, list[str]]]:
    """``(where, words)`` of every shell command in ``text``: the lines of bash/sh/shell blocks
    and inline spans that start with ``python`` or ``make``."""
    commands = []
    for language, first, code in code_blocks(text):
        if language in ("bash", "sh", "shell", "console"):
            for lineno, line in _shell_lines(code, first):
                words = _words(line)
                if words:
                    commands.append((f"README.md:{lineno}", words))
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    for m in re.finditer(r"`((?:python|make) [^`]+)`", prose):
        commands.append((f"README.md inline `{m.group(1)}`", _words(m.group(1))))
    return commands


def program_calls(commands) -> dict[str, list[tuple[str, list[str]]]]:
    """``{program path: [(where, argv), ...]}`` of the ``python <file>.py ...`` commands."""
    calls: dict[str, list] = {}
    for where, words in commands:
        if words[0] in ("python", "python3") and len(words) > 1 and words[1].endswith(".py"):
            calls.setdefault(words[1], []).append((where, words[2:]))
    return calls


def _repo_paths(words) -> list[str]:
    """Words (or ``--flag=value`` values, comma lists split) that are paths in the repo folders."""
    paths = []
    for word in words:
        value = word.split("=", 1)[1] if word.startswith("-") and "=" in word else word
        for part in value.split(","):
            part = part.strip("'\"")
            if part.startswith(REPO_DIRS) and not re.search(r"[<>*{}$]", part):
                paths.append(part)
    return paths


# ------------------------------------------------------------------------------------ checking
def check_program_calls(calls, defined: set | None = None) -> list[str]:
    """Every problem of ``calls`` (``program_calls``'s form): missing programs or files, and
    flags that do not parse, each naming where it was found. Empty when all is well. The names
    of the flags the programs define are added to ``defined`` when it is given."""
    problems = []
    for program, uses in sorted(calls.items()):
        if not (REPO / program).is_file():
            problems += [f"{where}: no program {program}" for where, _ in uses]
            continue
        source = (REPO / program).read_text()
        argvs = []
        for where, argv in uses:
            for word in argv:
                if word in HELP_FLAGS and "app.run(" not in source and word not in source:
                    problems.append(f"{where}: {program} does not handle {word}")
            argvs.append([w for w in argv if w not in HELP_FLAGS])
            problems += [f"{where}: no file {path} in the repository"
                         for path in _repo_paths(argv) if not (REPO / path).exists()]
        done = subprocess.run([sys.executable, "-c", _PARSER, program, json.dumps(argvs)],
                              cwd=REPO, capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        marker = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULTS=")]
        if done.returncode or not marker:
            problems.append(f"{program}: cannot be imported to read its flags "
                            f"(exit {done.returncode}): {done.stderr.strip()[-2000:]}")
            continue
        answer = json.loads(marker[0][len("RESULTS="):])
        if defined is not None:
            defined.update(answer["flags"])
        for (where, argv), result in zip(uses, answer["lines"]):
            if result["error"]:
                problems.append(f"{where}: {program}: {result['error']}")
            in_flagfiles = set(_repo_paths(result["expanded"])) - set(_repo_paths(argv))
            problems += [f"{where}: no file {path} in the repository (named in a flagfile)"
                         for path in sorted(in_flagfiles) if not (REPO / path).exists()]
    return problems


def make_targets() -> set[str]:
    """The targets the Makefile defines."""
    text = (REPO / "Makefile").read_text()
    return {t for m in re.finditer(r"^([\w .-]+):(?!=)", text, re.M) for t in m.group(1).split()}


# --------------------------------------------------------------------------------------- tests
README_TEXT = README.read_text(encoding="utf-8")
PYTHON_BLOCKS = [(line, code) for language, line, code in code_blocks(README_TEXT)
                 if language == "python"]


def test_readme_has_examples_to_check():
    calls = program_calls(command_lines(README_TEXT))
    assert len(PYTHON_BLOCKS) >= 2, "the README's API tour lost its Python examples"
    assert {"pipelines/train.py", "pipelines/evaluate.py", "pipelines/export.py",
            "pipelines/data_service.py"} <= set(calls), sorted(calls)


@pytest.mark.parametrize("line,code", PYTHON_BLOCKS, ids=[f"line{ln}" for ln, _ in PYTHON_BLOCKS])
def test_python_block_runs(line, code, monkeypatch):
    import keras
    monkeypatch.chdir(REPO)
    policy = keras.config.dtype_policy()
    try:
        exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})
    finally:
        keras.config.set_dtype_policy(policy)


@pytest.fixture(scope="module")
def checked_commands():
    """(problems, names of the flags the README's programs define), checked once."""
    defined: set = set()
    problems = check_program_calls(program_calls(command_lines(README_TEXT)), defined)
    return problems, defined


def test_command_lines_name_real_programs_flags_and_files(checked_commands):
    problems, _ = checked_commands
    assert not problems, "\n".join(problems)


def test_flags_named_in_the_text_exist(checked_commands):
    _, defined = checked_commands
    named = set(re.findall(r"`--([a-z0-9_]+)(?=[`= ])", README_TEXT))
    assert len(named) > 20
    unknown = named - defined - {f.lstrip("-") for f in HELP_FLAGS}
    assert not unknown, f"flags no program defines: {sorted(unknown)}"


def test_make_targets_exist():
    targets = make_targets()
    named = [(where, words[1]) for where, words in command_lines(README_TEXT)
             if words[0] == "make" and len(words) > 1]
    assert named, "the README lost its make commands"
    missing = [f"{where}: make {t}" for where, t in named if t not in targets]
    assert not missing, f"targets not in the Makefile: {missing}"


def test_cited_files_exist():
    links = [t for t in re.findall(r"\]\(([^)\s]+)\)", README_TEXT)]
    outside = [t for t in links if re.match(r"\w+://|/|\.\./", t)]
    assert not outside, f"the README cites only files inside the repository: {outside}"
    cited = [t.split("#")[0] for t in links] + _repo_paths(
        span for span in re.findall(r"`([^`\s]+)`", README_TEXT))
    missing = sorted({p for p in cited if p and not (REPO / p).exists()})
    assert not missing, f"the README cites files that are not in the repository: {missing}"


def test_cited_python_names_import():
    names = sorted(set(re.findall(r"`(rnl_keras(?:\.\w+)+)", README_TEXT)))
    assert names
    missing = []
    for name in names:
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):   # the longest importable module, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError:
                continue
            try:
                for attr in parts[cut:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                missing.append(name)
            break
        else:
            missing.append(name)
    assert not missing, f"the README cites names that do not exist: {missing}"


# ------------------------------------------------------------------------- the checker, checked
def test_checker_refuses_an_unknown_flag_a_bad_value_and_missing_files(tmp_path):
    flagfile = tmp_path / "recipe.flags"
    flagfile.write_text("# a recipe\n--labels=rnl_keras/data/no_such_labels.txt\n")
    text = ("```bash\n"
            "python pipelines/export.py --model=m.keras --name=n --no_such_flag=1\n"
            "python pipelines/evaluate.py --model=m.keras --list_file=v.txt --protocol=k401\n"
            "python pipelines/train.py --flagfile=configs/no_such_recipe.flags\n"
            "python pipelines/no_such_program.py --x=1\n"
            "python pipelines/export.py --model=m.keras --name=n \\\n"
            "    --labels=rnl_keras/data/no_such_classes.txt\n"
            "python pipelines/export.py --name=n   # --model is required\n"
            f"python pipelines/export.py --model=m.keras --name=n --flagfile={flagfile}\n"
            "```\n")
    problems = check_program_calls(program_calls(command_lines(text)))
    joined = "\n".join(problems)
    assert "README.md:2: pipelines/export.py: UnrecognizedFlagError" in joined, joined
    assert "no_such_flag" in joined
    assert "README.md:3: pipelines/evaluate.py: IllegalFlagValueError" in joined, joined
    assert "README.md:4: no file configs/no_such_recipe.flags" in joined, joined
    assert "README.md:5: no program pipelines/no_such_program.py" in joined, joined
    assert "README.md:6: no file rnl_keras/data/no_such_classes.txt" in joined, joined
    assert "README.md:8: pipelines/export.py: IllegalFlagValueError: Flag --model must" in joined
    assert ("README.md:9: no file rnl_keras/data/no_such_labels.txt in the repository (named in "
            "a flagfile)") in joined, joined
    assert len(problems) == 8, joined   # the missing flagfile: no file, and absl cannot open it


def test_checker_accepts_good_lines_and_reads_flagfiles():
    text = ("```bash\n"
            "python pipelines/train.py --flagfile=configs/demo.flags --epochs=1  # a comment\n"
            "python pipelines/train.py ... --batch_size=4\n"
            "```\nand inline `python pipelines/demo.py --quick`.\n")
    calls = program_calls(command_lines(text))
    assert calls == {"pipelines/train.py": [("README.md:2", ["--flagfile=configs/demo.flags",
                                                             "--epochs=1"]),
                                            ("README.md:3", ["--batch_size=4"])],
                     "pipelines/demo.py": [("README.md inline `python pipelines/demo.py --quick`",
                                            ["--quick"])]}
    assert check_program_calls(calls) == []
