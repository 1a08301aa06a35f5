"""What `pip install .` (a wheel, not the editable checkout) ships: every product package, listed by hand
in pyproject.toml, so one added later is not silently left out of the wheel."""
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOT_SHIPPED = {"tests", "bench", "build", ".venv"}


def test_every_package_in_the_tree_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(ROOT).parts) for init in ROOT.rglob("__init__.py")
             if init.relative_to(ROOT).parts[0] not in NOT_SHIPPED}
    assert found - listed == set(), "packages missing from pyproject.toml [tool.setuptools] packages"
    assert listed - found == set(), "pyproject.toml lists packages that do not exist"


def test_the_shipped_model_and_its_judge_are_package_data():
    """setuptools globs do not recurse: a file under stagewise/model/ that no pattern names is left out of the
    wheel, and `stagewise demo` would then run without it (the judge) or not at all (the model)."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package = ROOT / "stagewise"
    shipped = {f for pattern in patterns["stagewise"] for f in package.glob(pattern) if f.is_file()}
    model_files = {f for f in (package / "model").rglob("*") if f.is_file()}
    assert model_files - shipped == set(), "files under stagewise/model/ that the wheel would leave out"
    assert (package / "model" / "judge" / "config.json") in shipped
