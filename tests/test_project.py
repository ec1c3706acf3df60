"""The project's own files agree with each other."""

import re
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _bound(requirement: str) -> str:
    match = re.search(r">=\s*([\w.]+)", requirement)
    return match.group(1) if match else ""


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r): _bound(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        wanted.update({_name(r): _bound(r) for r in extra})
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {_name(d): _bound(d) for d in env["dependencies"]
             if isinstance(d, str) and _name(d) not in ("python", "pip")}
    assert conda == wanted
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip_section == ["-e .[dev]"]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    test_command = [line for line in commands.splitlines()
                    if line and not line.startswith("#")][1]
    assert "pytest" in test_command
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci


def test_readme_opens_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```bash", 1)[1].split("```", 1)[0]
    assert "jupyter lab" in first_block and "pytest" in first_block
    assert readme.index("```bash") < readme.index("## ")


def test_readme_library_example_runs_and_its_comments_hold():
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    code = code.replace("(4096, 4096)", "(256, 4096)")  # same widths, smaller tensor
    namespace: dict = {}
    exec(code, namespace)  # our own README's code
    qt, gqlearn = namespace["qt"], namespace["gqlearn"]
    assert (qt.bits_per_weight, round(qt.compression_ratio("bf16"), 2)) == (8.25, 1.94)
    assert gqlearn.choose_group_size(384, 256) == 128
